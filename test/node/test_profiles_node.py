"""Dataset profiles in the node: `vocabulary: [cocostuff]` gives the official COCO-Stuff scores,
label map and CLIP-ES masks (no background); switching profiles at runtime switches classes
and settings together; a profile's setting can be overridden; `[=coco]` is one class."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image as PILImage
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from tagclip_ros.core import read_image
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import LATCHED, Camera, wait_until

from ..conftest import IMAGES, REFERENCE, WEIGHTS, reference_scores
from .conftest import started_tagger

ANSWER_S = 120
SCORE_ATOL = 1e-3  # the fixture README's bound for COCO-Stuff
ROCKET = "rocket.jpg"


def threshold_for_top(scores: list[float], count: int) -> float:
    """A relative tag threshold that passes exactly the `count` best scores."""
    ranked = sorted(scores, reverse=True)
    low, high = min(scores), max(scores)
    return ((ranked[count - 1] + ranked[count]) / 2 - low) / (high - low)


def official_rocket() -> tuple[list[float], list[int], np.ndarray]:
    reference = reference_scores("cocostuff")
    scores = reference["scores"][reference["images"].index(ROCKET)]
    with open(os.path.join(REFERENCE, "clipes_cocostuff", "labels_cocostuff.json"), encoding="utf-8") as f:
        labels = json.load(f)[ROCKET]
    mask = np.asarray(PILImage.open(os.path.join(REFERENCE, "clipes_cocostuff", "rocket_mask.png")))
    return scores, labels, mask


@pytest.fixture(scope="module")
def stuff_tagger(ros, tmp_path_factory, text_cache_dir):
    scores, labels, _ = official_rocket()
    threshold = threshold_for_top(scores, len(labels))  # the fixture's CLIP-ES tags: the top 3
    log = str(tmp_path_factory.mktemp("logs") / "profiles.log")
    process = started_tagger(ros, "/stuff", log, {
        "model.weights": WEIGHTS, "device": "cpu", "text_cache_dir": text_cache_dir,
        "vocabulary": ["cocostuff"], "tag_threshold": threshold, "image_qos": "reliable"})
    yield process, threshold
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


def answer(messages: list, stamp):
    return wait_until(lambda: next((m for m in list(messages) if m.header.stamp == stamp), None),
                      ANSWER_S, f"answer for stamp {stamp.sec}")


def set_parameters(ros, **values) -> object:
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                for k, v in values.items()])
    return ros.call(SetParameters, "/stuff/tagclip_tagger/set_parameters", request).results


def test_cocostuff_profile_gives_the_official_scores_label_map_and_masks(ros, stuff_tagger):
    process, threshold = stuff_tagger
    info = ros.collect(LabelInfo, "/stuff/label_info", LATCHED)
    tags, masks = ros.collect(TagArray, "/stuff/tags"), ros.collect(Image, "/stuff/label_mask")
    scores, labels, official_mask = official_rocket()
    rgb = read_image(os.path.join(IMAGES, ROCKET))
    stamp = Camera(ros, "/stuff/camera", qos=10).send(rgb_to_image(rgb, Header()), 11)
    tagged = answer(tags, stamp)
    np.testing.assert_allclose(tagged.scores, scores, rtol=0, atol=SCORE_ATOL)
    assert sorted(t.class_id for t in tagged.tags) == sorted(i + 1 for i in labels)
    mask = answer(masks, stamp)
    ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(rgb.shape[:2]).astype(np.int64)
    assert ids.min() >= 1  # no background in COCO-Stuff's masks
    assert np.mean(ids - 1 == official_mask) >= 0.995
    latest = wait_until(lambda: info and info[-1], 30, "label_info")
    assert len(latest.class_map) == 172 and abs(latest.threshold - threshold) < 1e-6
    assert latest.class_map[5].class_name == "airplane"  # COCO-Stuff's name table


def test_switching_profiles_at_runtime_switches_classes_and_settings(ros, stuff_tagger):
    info = ros.collect(LabelInfo, "/stuff/label_info", LATCHED)
    tags = ros.collect(TagArray, "/stuff/tags")
    camera = Camera(ros, "/stuff/camera", qos=10)
    frame = rgb_to_image(read_image(os.path.join(IMAGES, "chelsea.jpg")), Header())
    process, threshold = stuff_tagger
    try:
        assert all(r.successful for r in set_parameters(ros, vocabulary=["voc"], tag_threshold=-1.0))
        voc = reference_scores("voc")
        tagged = answer(tags, camera.send(frame, 21))
        np.testing.assert_allclose(tagged.scores, voc["scores"][voc["images"].index("chelsea.jpg")],
                                   rtol=0, atol=1e-4)
        wait_until(lambda: len(info[-1].class_map) == 21 and info[-1].threshold == 0.5, 30,
                   "the VOC profile's label map and threshold")
        assert all(r.successful for r in set_parameters(ros, vocabulary=["=coco"]))
        tagged = answer(tags, camera.send(frame, 22))
        assert len(tagged.scores) == 1 and tagged.tags[0].label == "coco"
        rejected = set_parameters(ros, tag_threshold=-0.5)[0]
        assert not rejected.successful and "or be -1 for the profile's" in rejected.reason
    finally:
        assert all(r.successful for r in set_parameters(ros, vocabulary=["cocostuff"],
                                                        tag_threshold=threshold))
