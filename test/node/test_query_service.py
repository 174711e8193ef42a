"""The `~/tag_image` service over DDS: a vocabulary other than the node's, answered as the core
answers it, while frames stream and the node's own outputs stay its own; the node's vocabulary
for an empty one; bad requests refused with their reason; nothing served while inactive."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from tagclip_ros.core.dataset_profiles import PROFILES
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.core.vocab import MAX_CLASSES
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import LATCHED, wait_until
from tagclip_ros.node.query_service import NOT_ACTIVE
from tagclip_ros.srv import TagImage

from .test_faults import STORM_ANSWER_S, assert_clean_log, class_names, started, streaming
from .test_tagger_node import ANSWER_S, chelsea, lifecycle

NS = "/query"
STAMP = Time(sec=77, nanosec=5)


@pytest.fixture(scope="module")
def query_tagger(ros, tmp_path_factory, text_cache_dir):
    process, _ = started(ros, tmp_path_factory, text_cache_dir, NS, image_qos="reliable")
    yield process
    assert process.stop() == 0, process.log()
    assert_clean_log(process)


@pytest.fixture(scope="module")
def core_answers(loaded, text_cache) -> dict:
    """The core's answers for chelsea.jpg: COCO with its CLIP-ES mask, VOC (the node's)."""
    rgb = chelsea()
    return {name: Perception.for_profile(loaded, PROFILES[name], text_cache).run(rgb, method)
            for name, method in (("coco", "clipes"), ("voc", None))}


def tag_image(ros, image: Image | None = None, vocabulary=(), background=(), want_mask=False,
              timeout: float = ANSWER_S) -> TagImage.Response:
    if image is None:
        image = rgb_to_image(chelsea(), Header(stamp=STAMP, frame_id="query_camera"))
    request = TagImage.Request(image=image, vocabulary=list(vocabulary), background=list(background),
                               want_mask=want_mask)
    return ros.call(TagImage, f"{NS}/tagclip_tagger/tag_image", request, timeout)


def test_another_vocabulary_is_answered_as_the_core_while_the_stream_keeps_the_nodes(
        ros, query_tagger, core_answers):
    tags = ros.collect(TagArray, f"{NS}/tags")
    infos = ros.collect(LabelInfo, f"{NS}/label_info", LATCHED)
    wait_until(lambda: infos, ANSWER_S, "the latched label_info")
    with streaming(ros, f"{NS}/camera", chelsea(), 50_000, period=0.3):
        wait_until(lambda: tags, ANSWER_S, "the stream answered")
        response = tag_image(ros, vocabulary=["coco"], want_mask=True, timeout=STORM_ANSWER_S)
        answered = len(tags)
        wait_until(lambda: len(tags) > answered, ANSWER_S, "the stream answered after the query")
    assert response.success, response.message
    coco = core_answers["coco"]
    np.testing.assert_allclose(response.tags.scores, coco.tags.scores, rtol=0, atol=1e-4)
    assert [(t.class_id, t.label) for t in response.tags.tags] == \
        [(t.class_id, t.label) for t in coco.tags.tags]
    assert response.tags.header.stamp == STAMP and response.tags.header.frame_id == "query_camera"
    assert class_names(response.label_info) == PROFILES["coco"].vocabulary.classes
    mask = response.label_mask
    assert (mask.height, mask.width, mask.encoding, mask.header.stamp) == (300, 451, "mono8", STAMP)
    ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(300, 451)
    # the core's mask (float16 argmax rule); another process may round a few CAM values apart
    assert np.mean(ids == coco.segmentation.mask) >= 0.999
    voc = core_answers["voc"].tags.scores
    for own in list(tags):  # every frame of the stream, before, during and after the query
        np.testing.assert_allclose(own.scores, voc, rtol=0, atol=1e-5)
    assert len(infos) == 1, "label_info was sent again"


def test_an_empty_vocabulary_is_the_nodes_and_no_mask_unless_asked(ros, query_tagger, core_answers):
    response = tag_image(ros)
    assert response.success, response.message
    np.testing.assert_allclose(response.tags.scores, core_answers["voc"].tags.scores, rtol=0, atol=1e-5)
    assert class_names(response.label_info) == PROFILES["voc"].vocabulary.classes
    assert (response.label_mask.height, len(response.label_mask.data)) == (0, 0)


@pytest.mark.parametrize("image, vocabulary, background, reason", [
    (Image(), ["coco"], [], "image is empty (0x0)"),
    (Image(height=2, width=2, encoding="rgb9", step=6, data=bytes(12)), [], [],
     "unsupported image encoding 'rgb9'"),
    (None, ["cat", "dog", "cat"], [], "vocabulary contains 'cat' more than once"),
    (None, ["cat", " "], [], "vocabulary contains a blank name"),
    (None, ["cat", "dog"], ["sky", ""], "background contains a blank name"),
    (None, [f"thing {i}" for i in range(MAX_CLASSES + 1)], [],
     f"vocabulary has {MAX_CLASSES + 1} names; at most {MAX_CLASSES} are allowed"),
    (None, ["extinguisher"], [], "vocabulary 'extinguisher' is not a dataset profile (voc, coco, "
                                 "cocostuff); to tag the single class 'extinguisher', write '=extinguisher'"),
], ids=["empty image", "bad encoding", "duplicate name", "blank name", "blank background",
        "too many names", "unknown profile"])
def test_a_bad_request_is_refused_with_its_reason(ros, query_tagger, image, vocabulary, background,
                                                  reason):
    response = tag_image(ros, image, vocabulary, background)
    assert (response.success, response.message) == (False, reason)
    assert query_tagger.process.poll() is None


def test_nothing_is_served_while_inactive(ros, query_tagger):
    assert lifecycle(ros, NS, Transition.TRANSITION_DEACTIVATE) == "inactive"
    try:
        response = tag_image(ros)
        assert (response.success, response.message) == (False, NOT_ACTIVE)
    finally:
        assert lifecycle(ros, NS, Transition.TRANSITION_ACTIVATE) == "active"
    assert tag_image(ros).success
