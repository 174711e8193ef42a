"""vision_msgs detections of a frame's label-mask regions: what the `detections` topic carries.

The regions themselves are core/detections.py's (one per 8-connected piece of a tagged class,
at least `detections.min_area` of the image). Each becomes a Detection2D: `bbox` centre and size
in the input image's pixels (the label mask keeps the frame's size; the centre in pixel
coordinates whose integers are pixel centres), `results[0].hypothesis` = the tag's label and
score, `results[0].pose` left at its default (a label-mask region has no pose), `id` =
`<label>/<k>`. Regions are computed only while a detections topic has a subscriber, as the
overlay is drawn only while watched.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray,
                             Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose, Point2D, Pose2D)

from ..core.depth import Box3D
from ..core.detections import Region, regions

if TYPE_CHECKING:  # imported by the camera feeder (through conversions), which must not load torch
    from ..core.pipeline import Perceived

# Topics whose subscribers need the frame's regions.
DETECTION_TOPICS = ("detections", "detections_3d")


def watched(publishers: Mapping[str, Any]) -> bool:
    """Whether any of the detection topics among `publishers` (topic → rclpy publisher) has
    a subscriber: only then are a frame's regions computed."""
    return any(publishers[topic].get_subscription_count() > 0
               for topic in DETECTION_TOPICS if topic in publishers)


def frame_regions(perceived: Perceived, min_area: float) -> list[Region] | None:
    """The regions of the frame's tags in its label mask, tags best first and each tag's
    largest first; None when the frame has no mask (segmentation off)."""
    if perceived.segmentation is None:
        return None
    return regions(perceived.segmentation.mask, perceived.tags.tags, min_area)


def hypothesis(region: Region) -> ObjectHypothesisWithPose:
    """The region's class and score (class_id is the label, as in `classification`); the
    pose stays at its default (zero position, identity orientation, zero covariance)."""
    return ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=region.label,
                                                                score=float(region.score)))


def detection_2d(region: Region, header: Header) -> Detection2D:
    """One region as a Detection2D: its box in the input image's pixels, its tag, its id."""
    (x, y), (width, height) = region.center, region.size
    box = BoundingBox2D(center=Pose2D(position=Point2D(x=float(x), y=float(y))),
                        size_x=float(width), size_y=float(height))
    return Detection2D(header=header, results=[hypothesis(region)], bbox=box, id=region.id)


def detection_2d_array(found: Iterable[Region], header: Header) -> Detection2DArray:
    """The frame's regions as `detections`, with the input image's header."""
    return Detection2DArray(header=header, detections=[detection_2d(r, header) for r in found])


def detection_3d(region: Region, box: Box3D, header: Header) -> Detection3D:
    """One region with depth as a Detection3D: its box in the colour camera's optical frame
    (metres; the centre the median point, orientation identity, size the 5–95 % extent), its
    tag and id as in 2D."""
    x, y, z = box.center
    center = Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    size = Vector3(x=box.size[0], y=box.size[1], z=box.size[2])
    return Detection3D(header=header, results=[hypothesis(region)],
                       bbox=BoundingBox3D(center=center, size=size), id=region.id)


def detection_3d_array(boxes: Iterable[tuple[Region, Box3D]], header: Header) -> Detection3DArray:
    """The frame's regions with depth as `detections_3d`, with the colour image's header."""
    return Detection3DArray(header=header, detections=[detection_3d(r, b, header) for r, b in boxes])
