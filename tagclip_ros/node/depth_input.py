"""The depth side of `detections_3d`: an aligned depth image and the colour camera's CameraInfo.

With `depth.enabled` the node subscribes `depth` (sensor_msgs/Image registered to the colour
image: 16UC1 or mono16 in millimetres, 32FC1 in metres) and `camera_info`, pairs each colour
frame with the depth image whose stamp is nearest its own within `depth.max_delay`
(core/stamps.py) and takes the newest CameraInfo. The 3D boxes themselves are core/depth.py's;
this module converts the messages and says, in one sentence (DepthError), why a frame's depth
cannot serve it.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..core.depth import Box3D, DepthError, Intrinsics, region_boxes
from ..core.detections import Region
from ..core.image import ImageError, check_size
from ..core.stamps import NoMatch, StampPairer, Wait, stamp_ns
from .conversions import pixel_rows

NUMBER = re.compile(r"\d+(\.\d+)?")
# depth encodings → element type: millimetres as unsigned 16-bit, metres as 32-bit float
DEPTH_TYPES = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}


def depth_to_array(msg: Image) -> np.ndarray:
    """The depth image as uint16 millimetres or float32 metres (height, width); DepthError
    for another encoding or a malformed message."""
    kind = DEPTH_TYPES.get(msg.encoding)
    if kind is None:
        raise DepthError(f"depth encoding {msg.encoding!r} is none of "
                         f"{', '.join(DEPTH_TYPES)} (16-bit millimetres or 32-bit float metres)")
    try:
        check_size(msg.height, msg.width)
    except ImageError as exc:
        raise DepthError(f"depth {exc}") from None
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    try:
        rows = pixel_rows(msg, msg.width * dtype.itemsize, msg.height)
    except ValueError as exc:
        raise DepthError(f"the {msg.width}x{msg.height} depth image's {exc}") from None
    return rows.view(dtype).reshape(msg.height, msg.width).astype(kind)


def intrinsics(info: CameraInfo, image_size: tuple[int, int]) -> Intrinsics:
    """The colour camera's pinhole model at the colour image's `image_size` (height, width)."""
    return Intrinsics.from_k(info.k, (info.height, info.width), image_size)


def frame_boxes(depth: Image, info: CameraInfo | None, found: Iterable[Region],
                image_size: tuple[int, int], min_points: int) -> list[tuple[Region, Box3D]]:
    """The 3D box of each region with at least `min_points` valid depth pixels; DepthError when
    this depth image and camera model cannot serve the frame."""
    if info is None:
        raise DepthError("no camera_info has arrived yet")
    return region_boxes(found, depth_to_array(depth), intrinsics(info, image_size), image_size,
                        min_points)


def paired_boxes(wait: Wait[Image], info: CameraInfo | None, found: Iterable[Region],
                 image_size: tuple[int, int], min_points: int) -> list[tuple[Region, Box3D]]:
    """The frame's 3D boxes from the depth image `wait` paired with it and the camera model
    `info`; DepthError saying why there are none for this frame."""
    try:
        depth = wait.result()
    except NoMatch as exc:
        raise DepthError(str(exc)) from None
    return frame_boxes(depth, info, found, image_size, min_points)


def header_stamp(header: Header) -> int:
    """A header's stamp in nanoseconds, as core/stamps.py pairs them."""
    return stamp_ns(header.stamp.sec, header.stamp.nanosec)


class DepthInput:
    """The node's `depth` and `camera_info` subscriptions (a camera's, `<camera>/depth` and
    `<camera>/camera_info`, given its `prefix`): recent depth images for pairing and the newest
    CameraInfo. Made at activate, closed at deactivate."""

    def __init__(self, node: Node, qos: QoSProfile, max_delay_s: float, prefix: str = "") -> None:
        self.pairer: StampPairer[Image] = StampPairer(max_delay_s, "depth image")
        self.camera_info: CameraInfo | None = None
        self._node = node
        self._subscriptions = [
            node.create_subscription(Image, prefix + "depth", self._on_depth, qos),
            node.create_subscription(CameraInfo, prefix + "camera_info", self._on_camera_info, qos)]

    def _on_depth(self, msg: Image) -> None:
        self.pairer.add(header_stamp(msg.header), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def wait(self, header: Header) -> Wait[Image]:
        """Open the pairing of a colour frame as it arrives (see core/stamps.py)."""
        return self.pairer.wait(header_stamp(header))

    def boxes(self, wait: Wait[Image], found: Iterable[Region], image_size: tuple[int, int],
              min_points: int) -> list[tuple[Region, Box3D]]:
        """The frame's 3D boxes from its paired depth image and the newest CameraInfo;
        DepthError saying why there are none for this frame."""
        return paired_boxes(wait, self.camera_info, found, image_size, min_points)

    def topics(self) -> str:
        """Where depth and camera_info come from (after remapping), for the log."""
        depth, info = (s.topic_name for s in self._subscriptions)
        return f"depth on {depth} and camera_info on {info}"

    def close(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []


class SkipWarnings:
    """Which reasons for skipping a frame's 3D to log: a new kind of reason at once, the same
    kind again only `period` s later (a camera's rate of one warning would flood the log). A
    reason's kind is its text without numbers ("the nearest is 0.120 s away")."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._last: dict[str, float] = {}  # kind → when it was last logged

    def due(self, reason: str) -> bool:
        """Whether to log `reason` now; if so, it counts as logged."""
        kind, now = NUMBER.sub("#", reason), self._clock()
        if now - self._last.get(kind, -float("inf")) < self.period:
            return False
        self._last[kind] = now
        return True
