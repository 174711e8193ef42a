"""`detections` over DDS: one Detection2D per region of the published label mask, computed only
while subscribed, with `detections.min_area` changeable at runtime."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovariance
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from tagclip_ros.core import read_image
from tagclip_ros.core.detections import DEFAULT_MIN_AREA, regions
from tagclip_ros.core.tags import Tag
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import Camera, Client, wait_until

from ..conftest import IMAGES, WEIGHTS
from .conftest import ANSWER_S, RESEND_S, answer_for, started_tagger
from .test_tagger_node import diagnostics_values

NS = "/det"


@pytest.fixture(scope="module")
def tagger(ros, tmp_path_factory, text_cache_dir):
    log = str(tmp_path_factory.mktemp("logs") / "det.log")
    process = started_tagger(ros, NS, log, {"model.weights": WEIGHTS, "device": "cpu",
                                            "text_cache_dir": text_cache_dir,
                                            "diagnostics_period": 0.5})
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


@pytest.fixture(scope="module")
def frame() -> Image:
    """A small real photograph: several regions at the default min_area, one at 0.2."""
    rgb = cv2.resize(read_image(os.path.join(IMAGES, "chelsea.jpg")), (224, 160),
                     interpolation=cv2.INTER_AREA)
    return rgb_to_image(rgb, Header())


def expected(tags: TagArray, mask: Image, min_area: float) -> list[tuple]:
    """What the detections of a frame must be: core.detections.regions of the frame's published
    label mask and tags, as (id, label, score, centre, size)."""
    ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.width)
    core_tags = [Tag(t.class_id - 1, t.label, t.score) for t in tags.tags]
    return [(r.id, r.label, np.float32(r.score), r.center, r.size)
            for r in regions(ids, core_tags, min_area)]


def received(detections: Detection2DArray) -> list[tuple]:
    """A Detection2DArray as `expected` describes one; each has one result, its pose unset."""
    found = []
    for d in detections.detections:
        [result] = d.results
        assert result.pose == PoseWithCovariance()
        assert d.header == detections.header
        found.append((d.id, result.hypothesis.class_id, np.float32(result.hypothesis.score),
                      (d.bbox.center.position.x, d.bbox.center.position.y),
                      (d.bbox.size_x, d.bbox.size_y)))
    return found


def first_answer(messages: list, camera: Camera, frame: Image, sec: int):
    """The first message on a newly subscribed topic: a new frame is sent every RESEND_S until
    the node's publisher has matched the subscription (the same stamp again would be a resend,
    answered once)."""
    sent = [camera.send(frame, sec).sec, time.monotonic()]

    def first():
        if not messages and time.monotonic() - sent[1] > RESEND_S:
            sent[:] = [camera.send(frame, sent[0] + 1).sec, time.monotonic()]
        return messages[0] if messages else None
    return wait_until(first, ANSWER_S, "a first message")


def test_detections_are_the_label_masks_regions_and_computed_only_while_subscribed(ros, tagger, frame):
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    tags, masks = ros.collect(TagArray, f"{NS}/tags"), ros.collect(Image, f"{NS}/label_mask")
    camera = Camera(ros, f"{NS}/camera")

    def settled(sec: int) -> dict:
        """/diagnostics once it counts a frame sent now (processed, after its tags)."""
        processed = int(wait_until(lambda: diagnostics_values(diagnostics, NS), 30, "diagnostics")
                        ["frames_processed"])
        answer_for(tags, camera.send(frame, sec), resend=lambda: camera.send(frame, sec))
        return wait_until(lambda: (v := diagnostics_values(diagnostics, NS))
                          and int(v["frames_processed"]) > processed and v, 30, "frame counted")

    before = int(settled(100)["detections_computed"])
    assert int(settled(101)["detections_computed"]) == before  # nobody subscribed: none computed
    detections = ros.collect(Detection2DArray, f"{NS}/detections")
    answer = first_answer(detections, camera, frame, 102)
    stamp = answer.header.stamp
    assert answer.header == Header(stamp=stamp, frame_id="camera_optical")
    reference = expected(answer_for(tags, stamp), answer_for(masks, stamp), DEFAULT_MIN_AREA)
    assert len(reference) > 1
    assert received(answer) == reference
    wait_until(lambda: int(diagnostics_values(diagnostics, NS)["detections_computed"]) > before, 30,
               "the detections counted in /diagnostics")


def set_min_area(ros: Client, value: float):
    request = SetParameters.Request(parameters=[
        Parameter("detections.min_area", Parameter.Type.DOUBLE, value).to_parameter_msg()])
    return ros.call(SetParameters, f"{NS}/tagclip_tagger/set_parameters", request).results[0]


def test_min_area_changes_at_runtime(ros, tagger, frame):
    tags, masks = ros.collect(TagArray, f"{NS}/tags"), ros.collect(Image, f"{NS}/label_mask")
    detections = ros.collect(Detection2DArray, f"{NS}/detections")
    camera = Camera(ros, f"{NS}/camera")
    first_answer(detections, camera, frame, 200)  # subscribed and matched
    try:
        assert set_min_area(ros, 0.2).successful
        stamp = camera.send(frame, 300)
        answer = answer_for(detections, stamp, resend=lambda: camera.send(frame, 300))
        tag_array, mask = answer_for(tags, stamp), answer_for(masks, stamp)
        assert received(answer) == expected(tag_array, mask, 0.2)
        assert len(expected(tag_array, mask, 0.2)) < len(expected(tag_array, mask, DEFAULT_MIN_AREA))
        refused = set_min_area(ros, 1.5)
        assert not refused.successful and "detections.min_area" in refused.reason
    finally:
        assert set_min_area(ros, DEFAULT_MIN_AREA).successful
