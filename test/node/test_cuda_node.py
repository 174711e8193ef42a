"""The node end to end on a CUDA GPU in float16: tags equal the core's on the same device and
precision, and the label mask has the frame's size. Skipped where torch sees no CUDA device."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tagclip_ros.core import TextFeatureCache, load_model, load_vocabulary, read_image
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import Camera, wait_until

from ..conftest import IMAGES, WEIGHTS
from .conftest import started_tagger

# scripts/gpu_check.sh sets TAGCLIP_REQUIRE_CUDA=1: there a GPU that torch cannot use fails
# these tests instead of skipping them.
REQUIRE_CUDA = os.environ.get("TAGCLIP_REQUIRE_CUDA") == "1"
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or REQUIRE_CUDA),
                                reason="needs a CUDA GPU: torch.cuda.is_available() is False here")

ANSWER_S = 120


@pytest.fixture(scope="module")
def tagger(ros, tmp_path_factory, text_cache_dir):
    log = str(tmp_path_factory.mktemp("logs") / "cuda.log")
    process = started_tagger(ros, "/gpu", log, {
        "model.weights": WEIGHTS, "device": "cuda", "precision": "fp16",
        "text_cache_dir": text_cache_dir, "image_qos": "reliable"})
    yield process
    assert process.stop() == 0, process.log()


def test_fp16_node_on_cuda_answers_as_the_core_does(ros, tagger, text_cache_dir):
    tags = ros.collect(TagArray, "/gpu/tags")
    masks = ros.collect(Image, "/gpu/label_mask")
    rgb = read_image(os.path.join(IMAGES, "chelsea.jpg"))
    stamp = Camera(ros, "/gpu/camera").send(rgb_to_image(rgb, Header()), 7)
    answered = wait_until(lambda: next((m for m in list(tags) if m.header.stamp == stamp), None),
                          ANSWER_S, "tags")
    loaded = load_model(weights=WEIGHTS, device="cuda", precision="fp16")
    expected = Perception(loaded, load_vocabulary("voc"),
                          text_cache=TextFeatureCache(loaded, text_cache_dir)).run(rgb, "clipes")
    np.testing.assert_allclose(answered.scores, expected.tags.scores, rtol=0, atol=1e-4)
    assert [t.class_id for t in answered.tags] == [t.class_id for t in expected.tags.tags]
    mask = wait_until(lambda: next((m for m in list(masks) if m.header.stamp == stamp), None),
                      ANSWER_S, "label mask")
    assert (mask.height, mask.width) == rgb.shape[:2]
    assert "Traceback" not in tagger.log()
