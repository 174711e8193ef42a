"""The core on a CUDA GPU: float32 reproduces the official scores, fp16/bf16 stay within the
stated figures of float32, and a frame makes a fixed, small number of host-device copies.

Skipped, with the reason, where torch sees no CUDA device (the build machines have none)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tagclip_ros.core import TagClip, TextFeatureCache, load_model, load_vocabulary, read_image
from tagclip_ros.core.deviation import measure
from tagclip_ros.core.dataset_profiles import PROFILES
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.core.segment import ClipEsSegmenter

from ..conftest import IMAGES, REFERENCE, WEIGHTS, reference_scores
from .test_batching import METHODS, assert_same_frame, mixed_size_frames, same_size_frames
from .test_precision import (BF16_CLIPES_AGREEMENT, BF16_DMAR_AGREEMENT, BF16_MAX_SCORE_DIFF,
                             ILL_CONDITIONED_FOR_CLIPES)

# scripts/gpu_check.sh sets TAGCLIP_REQUIRE_CUDA=1: there a GPU that torch cannot use fails
# these tests instead of skipping them.
REQUIRE_CUDA = os.environ.get("TAGCLIP_REQUIRE_CUDA") == "1"
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or REQUIRE_CUDA),
                                reason="needs a CUDA GPU: torch.cuda.is_available() is False here")

# Reduced precision on CUDA against float32 on CUDA, five fixture images, VOC vocabulary, held
# to the CPU's bfloat16 figures (test_precision.py, with their measured basis); not yet measured
# on a GPU: scripts/gpu_check.sh prints the figures (pytest -s) to set these from.
# Host-device copies per frame (tags and a CLIP-ES mask), whatever the number of classes or tags.
COPIES_PER_FRAME = 24


@pytest.fixture(scope="module")
def cuda32():
    return load_model(weights=WEIGHTS, device="cuda")


def low_precisions() -> list:
    bf16 = pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 0),
                              reason="bf16 needs compute capability 8.0")
    return ["fp16", pytest.param("bf16", marks=bf16)]


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_fp32_on_cuda_reproduces_the_official_scores(dataset, cuda32, text_cache_dir):
    reference = reference_scores(dataset)
    tagger = TagClip(cuda32, load_vocabulary(dataset), text_cache=TextFeatureCache(cuda32, text_cache_dir))
    for image, expected in zip(reference["images"], reference["scores"]):
        result = tagger.classify(read_image(os.path.join(IMAGES, image)))
        np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-4, err_msg=image)


def test_fp32_clipes_masks_on_cuda_match_the_official_ones(cuda32, text_cache_dir):
    segmenter = ClipEsSegmenter(cuda32, load_vocabulary("voc"),
                                text_cache=TextFeatureCache(cuda32, text_cache_dir))
    clipes = os.path.join(REFERENCE, "clipes")
    with open(os.path.join(clipes, "labels_voc.json"), encoding="utf-8") as f:
        labels = json.load(f)
    for image, class_indices in labels.items():
        expected = np.asarray(Image.open(os.path.join(clipes, f"{os.path.splitext(image)[0]}_mask.png")))
        mask = segmenter.segment(read_image(os.path.join(IMAGES, image)), class_indices).mask
        assert np.mean(mask == expected) >= 0.995, image


@pytest.mark.parametrize("precision", low_precisions())
def test_reduced_precision_on_cuda_against_fp32(precision, cuda32, text_cache_dir):
    low = load_model(weights=WEIGHTS, device="cuda", precision=precision)
    images = {name: read_image(os.path.join(IMAGES, name)) for name in sorted(os.listdir(IMAGES))}
    deviation = measure(cuda32, low, PROFILES["voc"], images, text_cache_dir)
    print(precision, deviation.as_dict())  # pytest -s: the figures for the README
    assert deviation.same_tags == deviation.images == len(images)
    assert deviation.max_score_diff <= BF16_MAX_SCORE_DIFF
    assert deviation.min_agreement("clipes", [ILL_CONDITIONED_FOR_CLIPES]) >= BF16_CLIPES_AGREEMENT
    dmar = deviation.pixel_agreement["dmar"]
    assert all(dmar[name] >= floor for name, floor in BF16_DMAR_AGREEMENT.items()), dmar


def copies_per_frame(run) -> int:
    """Host-to-device and device-to-host copies the CUDA profiler sees during `run()`."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        run()
        torch.cuda.synchronize()
    return sum(1 for event in profile.events() if "Memcpy" in event.name
               and ("HtoD" in event.name or "DtoH" in event.name))


def test_copies_per_frame_do_not_grow_with_classes_or_tags(cuda32, text_cache_dir):
    rgb = read_image(os.path.join(IMAGES, "rocket.jpg"))
    counts = {}
    for dataset in ("voc", "coco"):
        perception = Perception.for_profile(cuda32, PROFILES[dataset],
                                            TextFeatureCache(cuda32, text_cache_dir))
        perception.run(rgb, "clipes")  # warm-up: text features, tables
        counts[dataset] = copies_per_frame(lambda: perception.run(rgb, "clipes"))
    print(counts)
    assert max(counts.values()) <= COPIES_PER_FRAME, counts


@pytest.mark.parametrize("method", METHODS)
def test_batched_frames_on_cuda_are_each_what_they_are_alone(cuda32, text_cache_dir, method):
    """Several cameras' frames through the model together (what the node does on CUDA, where
    `batching_pays`): each frame's result is its own run's (test_batching.py on the CPU)."""
    loaded = cuda32
    perception = Perception(loaded, load_vocabulary("voc"),
                            text_cache=TextFeatureCache(loaded, text_cache_dir))
    same = same_size_frames()
    frames = {**mixed_size_frames(same), "coffee cut": same["coffee cut"]}
    for (name, rgb), result in zip(frames.items(), perception.run_batch(list(frames.values()), method)):
        assert_same_frame(result, perception.run(rgb, method), name)
