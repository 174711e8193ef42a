"""The depth side of `tagclip bag --depth TOPIC --camera-info TOPIC`: `detections_3d` offline.

A bag's depth images and camera_info are read by a second reader running ahead of the colour
frames: each frame opens a pairing (core/stamps.py), and the reader goes on until it has read a
depth image stamped past the frame's `max_delay` (or the bag ends). So a frame is paired, as in
the node, with the depth image whose stamp is nearest its own within the delay, whether that
image was logged before or after it, and with the newest camera_info read by then. Only a few
depth images are held at a time.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rclpy.serialization import deserialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..core.depth import DEFAULT_MAX_DELAY, DEFAULT_MIN_POINTS, Box3D
from ..core.detections import Region
from ..core.stamps import StampPairer
from .depth_input import header_stamp, paired_boxes

DEPTH_TYPE, CAMERA_INFO_TYPE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"


@dataclass(frozen=True)
class DepthTopics:
    """Where a bag's aligned depth images and colour CameraInfo are, and how to pair them."""

    depth: str
    camera_info: str
    max_delay: float = DEFAULT_MAX_DELAY
    min_points: int = DEFAULT_MIN_POINTS


def depth_topics_problem(connections: Iterable[Connection], topics: DepthTopics,
                         colour: list[str]) -> str | None:
    """Why the bag's topics cannot give `detections_3d` for the `colour` topics to be tagged
    (one sentence), or None."""
    kinds = {c.topic: c.msgtype for c in connections}
    for flag, topic, kind in (("--depth", topics.depth, DEPTH_TYPE),
                              ("--camera-info", topics.camera_info, CAMERA_INFO_TYPE)):
        if topic not in kinds:
            return f"{flag} {topic}: the bag has no such topic"
        if kinds[topic] != kind:
            return f"{flag} {topic}: it holds {kinds[topic]}, not {kind}"
    if len(colour) != 1:
        return (f"--depth is registered to one colour topic, and {len(colour)} would be tagged "
                f"({', '.join(colour)}); choose it with --topic")
    return None


class DepthLookahead:
    """A second reader of the bag over its depth and camera_info topics, read as far ahead of
    the colour frames as pairing needs (a context manager: it closes the reader)."""

    def __init__(self, source: str, topics: DepthTopics) -> None:
        self.topics = topics
        self.pairer: StampPairer[Image] = StampPairer(topics.max_delay, "depth image")
        self.camera_info: CameraInfo | None = None
        self._reader = Reader(source)
        self._reader.open()
        wanted = [c for c in self._reader.connections if c.topic in (topics.depth, topics.camera_info)]
        self._messages = self._reader.messages(connections=wanted)

    def __enter__(self) -> DepthLookahead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()

    def boxes(self, header: Header, found: Iterable[Region], image_size: tuple[int, int]
              ) -> list[tuple[Region, Box3D]]:
        """The 3D boxes of the frame with `header`; DepthError saying why there are none."""
        stamp = header_stamp(header)
        wait = self.pairer.wait(stamp)
        while not self.pairer.settled(stamp) and self._read_one():
            pass
        return paired_boxes(wait, self.camera_info, found, image_size, self.topics.min_points)

    def _read_one(self) -> bool:
        """Take the next depth image or camera_info; False at the end of the bag. A message
        that cannot be deserialised is passed over: a frame it would serve gets no depth."""
        item = next(self._messages, None)
        if item is None:
            return False
        connection, _, raw = item
        is_info = connection.topic == self.topics.camera_info
        try:
            msg = deserialize_message(raw, CameraInfo if is_info else Image)
        except Exception:  # rclpy raises assorted errors for a truncated or garbled payload
            return True
        if is_info:
            self.camera_info = msg
        else:
            self.pairer.add(header_stamp(msg.header), msg)
        return True
