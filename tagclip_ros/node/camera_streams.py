"""The node's cameras: each one's topics and the state that belongs to its stream of frames.

With `cameras` empty the node has one stream under the plain names (`image`, `tags`, ...); with
`cameras: [front, left]` one per camera under `front/image`, `front/tags`, ... (relative to the
node's namespace, so each can be remapped on its own). The model, the text-feature cache and
the vocabulary are the node's, shared by all streams; what is per stream lives here: the
subscriptions and publishers, the last frame's header (to spot a resend), the stable tags, the
frame statistics and the throttled depth warnings.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Classification, Detection2DArray, Detection3DArray, LabelInfo

from ..core.temporal import StableTags
from ..msg import TagArray
from .depth_input import DepthInput, SkipWarnings
from .diagnostics import FrameStats

OUTPUTS: dict[str, type] = {"tags": TagArray, "classification": Classification, "label_mask": Image,
                            "overlay": Image, "detections": Detection2DArray,
                            "detections_3d": Detection3DArray}


class CameraStream:
    """One camera's subscriptions, publishers and stream state. `name` is "" for the node's
    single camera (plain topic names) or the camera's name (its topics' prefix)."""

    def __init__(self, name: str, log_throttle_s: float, stats: FrameStats | None = None) -> None:
        self.name = name
        self.stats = stats or FrameStats()
        self.pubs: dict[str, Any] = {}
        self.subscription = None
        self.depth: DepthInput | None = None  # with depth.enabled, while active
        self.depth_warnings = SkipWarnings(log_throttle_s)
        self.last_taken: Header | None = None  # the last frame's header, to spot a resend
        self.stable: StableTags | None = None  # with temporal.enabled: this stream's stable tags
        self.noted_size: tuple[int, int] | None = None  # frame size last checked for downscaling

    def counted_in(self, node_stats: FrameStats) -> list[FrameStats]:
        """The statistics a frame of this camera counts in: the node's, and a named camera's
        own (the single camera's are the node's)."""
        return [node_stats] if self.stats is node_stats else [node_stats, self.stats]

    def topic(self, base: str) -> str:
        """The stream's name for one of the node's topics ("tags" → "front/tags")."""
        return f"{self.name}/{base}" if self.name else base

    @property
    def label(self) -> str:
        """How logs and /diagnostics name the camera ("" for a single-camera node)."""
        return f"camera {self.name}: " if self.name else ""

    def create_publishers(self, node: Node, latched: QoSProfile) -> None:
        self.pubs = {topic: node.create_publisher(kind, self.topic(topic), 10)
                     for topic, kind in OUTPUTS.items()}
        self.pubs["label_info"] = node.create_publisher(LabelInfo, self.topic("label_info"), latched)

    def destroy_publishers(self, node: Node) -> None:
        for publisher in self.pubs.values():
            node.destroy_publisher(publisher)
        self.pubs = {}

    def subscribe(self, node: Node, compressed: bool, qos: QoSProfile,
                  on_image: Callable[[CameraStream, Image | CompressedImage], None], events: Any,
                  depth_max_delay: float | None) -> None:
        """Subscribe the camera's images (and, given `depth_max_delay`, its depth and
        camera_info); a resent frame may come again after this."""
        self.subscription = node.create_subscription(
            CompressedImage if compressed else Image,
            self.topic("image/compressed" if compressed else "image"),
            lambda msg: on_image(self, msg), qos, event_callbacks=events)
        if depth_max_delay is not None:
            self.depth = DepthInput(node, qos, depth_max_delay, self.topic(""))
        self.last_taken = None

    def unsubscribe(self, node: Node) -> None:
        if self.subscription is not None:
            node.destroy_subscription(self.subscription)
            self.subscription = None
        if self.depth is not None:
            self.depth.close()
            self.depth = None

    def listening(self) -> str:
        """Where the stream's inputs come from (after remapping), for the log."""
        depth = f" with {self.depth.topics()}" if self.depth is not None else ""
        return f"{self.subscription.topic_name}{depth}" if self.subscription is not None else "nothing"


def camera_streams(cameras: Sequence[str], log_throttle_s: float, stats: FrameStats) -> list[CameraStream]:
    """The node's streams: one per camera, or the single unnamed one (whose statistics are the
    node's `stats`) when `cameras` is empty."""
    if not cameras:
        return [CameraStream("", log_throttle_s, stats)]
    return [CameraStream(name, log_throttle_s) for name in cameras]
