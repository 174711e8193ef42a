"""One frame's results onto its camera's topics: what is published, and what is computed only
while someone listens (the overlay, detections, detections_3d)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from ..core.depth import DepthError
from ..core.detections import Region
from ..core.pipeline import Perceived
from ..core.stamps import Wait
from . import conversions, detection_messages
from .camera_streams import CameraStream
from .diagnostics import FrameStats

LOG_THROTTLE_S = 5.0


class FrameOutputs:
    """Publishes frames' results for the node: `stats` are the node's (all cameras), `param`
    reads a node parameter, `logger` is the node's."""

    def __init__(self, logger: Any, stats: FrameStats, param: Callable[[str], Any]) -> None:
        self._logger = logger
        self._stats = stats
        self._param = param

    def publish(self, stream: CameraStream, header: Header, rgb: np.ndarray, result: Perceived,
                depth: Wait | None) -> None:
        """Tags, classification and label_mask always; the overlay, detections and
        detections_3d while they have subscribers. The caller holds the node's publish lock."""
        overlay = stream.pubs["overlay"].get_subscription_count() > 0  # drawn only when watched
        if overlay:
            self._stats.record_overlay()
        found = self._regions(result) if detection_messages.watched(stream.pubs) else None
        for topic, out in conversions.result_messages(result, header, rgb, overlay, found).items():
            stream.pubs[topic].publish(out)
        boxes = self._detections_3d(stream, header, rgb.shape[:2], found, depth)
        if boxes is not None:
            stream.pubs["detections_3d"].publish(boxes)

    def _detections_3d(self, stream: CameraStream, header: Header, size: tuple[int, int],
                       found: list[Region] | None, depth: Wait | None) -> Detection3DArray | None:
        """The frame's detections_3d: with depth on, while watched, for a frame with regions.
        None when its depth cannot serve it: the frame's 3D is skipped, counted in /diagnostics
        (the node's and the camera's) and the reason logged (each kind at once, then
        throttled)."""
        source = stream.depth
        if (source is None or depth is None or found is None
                or stream.pubs["detections_3d"].get_subscription_count() == 0):
            return None
        try:
            boxes = source.boxes(depth, found, size, self._param("depth.min_points"))
        except DepthError as exc:
            for stats in stream.counted_in(self._stats):
                stats.record_depth_skip(str(exc))
            if stream.depth_warnings.due(str(exc)):
                stamp = header.stamp
                self._logger.warning(f"{stream.label}no detections_3d for the frame stamped "
                                     f"{stamp.sec}.{stamp.nanosec:09d}: {exc}")
            return None
        return detection_messages.detection_3d_array(boxes, header)

    def _regions(self, result: Perceived) -> list[Region] | None:
        """The frame's detection regions, counted in /diagnostics; None, with a throttled
        warning, when segmentation is off (regions are those of the label mask)."""
        found = detection_messages.frame_regions(result, self._param("detections.min_area"))
        if found is None:
            self._logger.warning("detections need segmentation.enabled: none are published",
                                 throttle_duration_sec=LOG_THROTTLE_S)
        else:
            self._stats.record_detections()
        return found
