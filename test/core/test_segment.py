"""Classify-then-segment against the official CLIP-ES output, and exact properties of its parts."""
from __future__ import annotations

import copy
import json
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tagclip_ros.core import TextFeatureCache, Vocabulary, load_vocabulary, read_image
from tagclip_ros.core.loading import LoadedModel
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.core.boxes import box_mask, contour_boxes
from tagclip_ros.core.transform import prepare_image
from tagclip_ros.core.segment import (
    CLIPES_BACKGROUND, ClipEsSegmenter, SegmentationSettings, background_names, clipes_model,
    dmar_segment, grad_cam, label_mask,
)

from ..conftest import IMAGES, REFERENCE

CLIPES = os.path.join(REFERENCE, "clipes")
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
CAM_TOLERANCE = 1e-2
MASK_AGREEMENT = 0.995


def reference_labels() -> dict[str, list[int]]:
    with open(os.path.join(CLIPES, "labels_voc.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def segmenter(loaded, text_cache):
    return ClipEsSegmenter(loaded, load_vocabulary("voc"), text_cache=text_cache)


@pytest.mark.parametrize("image", sorted(reference_labels()))
def test_cams_and_masks_match_official_clipes(image, segmenter):
    class_indices = reference_labels()[image]
    stem = os.path.splitext(image)[0]
    expected = np.load(os.path.join(CLIPES, f"{stem}_cams.npy"), allow_pickle=True).item()
    expected_mask = np.asarray(Image.open(os.path.join(CLIPES, f"{stem}_mask.png")))
    rgb = read_image(os.path.join(IMAGES, image))

    result = segmenter.segment(rgb, class_indices)

    assert list(expected["keys"]) == class_indices == result.class_indices
    assert result.cams.shape == expected["attn_highres"].shape == (len(class_indices), *rgb.shape[:2])
    assert result.cams.dtype == np.float32 and result.mask.dtype == np.uint16
    np.testing.assert_allclose(result.cams, expected["attn_highres"].astype(np.float32),
                               rtol=0, atol=CAM_TOLERANCE, err_msg=image)
    agreement = float(np.mean(result.mask == expected_mask))
    assert agreement >= MASK_AGREEMENT, f"{image}: masks agree on {agreement:.4%} of pixels"


def test_batched_gradients_equal_one_backward_per_tag(segmenter):
    rgb = read_image(os.path.join(IMAGES, "rocket.jpg"))
    class_indices = reference_labels()["rocket.jpg"]
    _, foreground, background = segmenter._vocab_state
    text = torch.cat([foreground[class_indices], background])
    pixels = prepare_image(rgb, segmenter.loaded.patch_size)

    batched_cams, batched_attention = segmenter.grad_cams(pixels, text, len(class_indices))
    per_tag_cams, per_tag_attention = segmenter.grad_cams(pixels, text, len(class_indices),
                                                          batched=False)

    assert batched_cams.shape == (len(class_indices), pixels.shape[-2] * pixels.shape[-1] // 256)
    torch.testing.assert_close(batched_cams, per_tag_cams, rtol=0, atol=1e-5)
    torch.testing.assert_close(batched_attention, per_tag_attention, rtol=0, atol=0)


def test_grad_cam_sums_in_the_official_order():
    """From the official run's own ln_1 output and gradients, `grad_cam` returns the official
    CAMs bit for bit (a matmul-and-mean order differs by ~5e-7, enough to move a box edge)."""
    recorded = np.load(os.path.join(FIXTURES, "clipes_gradcam_chelsea.npz"))
    expected = recorded["grayscale_cam"]
    cams = grad_cam(torch.from_numpy(recorded["ln1_out"][1:]),
                    torch.from_numpy(recorded["ln1_grad"][:, 1:]), expected.shape[1:])
    np.testing.assert_array_equal(cams.numpy().reshape(expected.shape), expected)


def test_gradients_of_each_tag_equal_a_separate_backward(segmenter):
    """Each tag's gradient from the batched pass equals that of its own forward and backward
    pass of the last block (what the official code runs per tag), up to float reordering."""
    torch.manual_seed(0)
    x = torch.randn(1, 17, segmenter.vision.visual.conv1.out_channels)
    normed = segmenter.vision.blocks[-1].ln_1(x)
    text = torch.nn.functional.normalize(torch.randn(6, segmenter.loaded.model.visual.proj.shape[1]), dim=-1)
    batched = segmenter.tag_gradients(x, normed, text, 4)
    for t in range(4):
        leaf = normed.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (alone,) = torch.autograd.grad(segmenter.image_probabilities(x, leaf, text)[0, t], leaf)
        scale = float(alone.abs().max())
        torch.testing.assert_close(batched[t], alone[0], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("tags, reason", [
    ([], "no classes to segment"), ([25], "outside the vocabulary"), ([3, 3], "more than once"),
])
def test_unusable_tag_lists_are_rejected_with_a_reason(segmenter, tags, reason):
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=reason):
        segmenter.segment(rgb, tags)


def test_dmar_mode_gives_a_label_mask_of_the_tags(voc_tagger):
    rgb = read_image(os.path.join(IMAGES, "rocket.jpg"))
    result = voc_tagger.classify(rgb)
    tags = [t.index for t in result.tags]

    segmentation = dmar_segment(result, rgb.shape[:2])

    assert segmentation.class_indices == tags
    assert segmentation.mask.shape == rgb.shape[:2] and segmentation.mask.dtype == np.uint16
    assert set(np.unique(segmentation.mask)) <= {0} | {i + 1 for i in tags}
    assert segmentation.cams.shape == (len(tags), *rgb.shape[:2])
    assert segmentation.cams.min() >= 0 and segmentation.cams.max() <= 1
    np.testing.assert_array_equal(segmentation.mask, label_mask(segmentation.cams, tags, 1.0))
    with pytest.raises(ValueError, match="no classes"):
        dmar_segment(result, rgb.shape[:2], class_indices=[])


def test_label_mask_follows_the_official_evaluation():
    cams = np.array([[[0.9, 0.5, 0.2, 0.0]], [[0.1, 0.3, 0.7, 0.0]]], dtype=np.float32)
    # background = 1 - max: 0.1, 0.5 (ties with class 4's 0.5: background wins), 0.3, 1.0
    np.testing.assert_array_equal(label_mask(cams, [4, 11], 1.0), [[5, 0, 12, 0]])
    # a larger power shrinks the background score: 0.5 ** 3 loses to 0.5
    np.testing.assert_array_equal(label_mask(cams, [4, 11], 3.0), [[5, 5, 12, 0]])
    with pytest.raises(ValueError, match="one map per class"):
        label_mask(cams, [4], 1.0)


def test_label_mask_takes_the_argmax_over_float16_maps_ties_to_the_lower_class():
    """Two tags whose maps differ in float32 but are equal in float16 (as the official pipeline
    stores them): the lower class id wins, whatever order the tags come in; a float32 argmax
    would pick the other tag."""
    higher = np.float32(0.7003)
    lower = np.float32(0.7001)
    assert np.float16(higher) == np.float16(lower)
    cams = np.stack([np.full((2, 3), higher), np.full((2, 3), lower)])  # class 9, then class 2
    assert (np.argmax(cams, axis=0) == 0).all()  # float32 would give class 9
    np.testing.assert_array_equal(label_mask(cams, [9, 2], 1.0), np.full((2, 3), 3))
    np.testing.assert_array_equal(label_mask(cams[::-1], [2, 9], 1.0), np.full((2, 3), 3))
    # the background is computed from the float16 maps too: a 0.50002 map rounds to 0.5 and
    # ties with its background 1 - 0.5 (background wins); in float32 it would beat 0.49998
    edge = np.full((1, 1, 1), 0.50002, dtype=np.float32)
    assert np.float16(edge[0, 0, 0]) == 0.5
    np.testing.assert_array_equal(label_mask(edge, [6], 1.0), [[0]])


def test_every_mask_path_applies_the_rule(loaded, text_cache):
    """Perception's masks (what the node publishes and `overlay` draws) by both methods, and
    the segmenter's, are `label_mask` of their own maps, for tags in best-first order."""
    perception = Perception(loaded, load_vocabulary("voc"), text_cache=text_cache)
    rgb = read_image(os.path.join(IMAGES, "rocket.jpg"))
    for method in ("clipes", "dmar"):
        seg = perception.run(rgb, method).segmentation
        assert len(seg.class_indices) > 1 and seg.class_indices != sorted(seg.class_indices)
        np.testing.assert_array_equal(seg.mask, label_mask(seg.cams, seg.class_indices, 1.0))
    alone = perception.segmenter.segment(rgb, seg.class_indices[::-1])
    np.testing.assert_array_equal(alone.mask, label_mask(alone.cams, alone.class_indices, 1.0))


def test_box_mask_equals_official_tree_contours():
    """contour_boxes takes external contours; CLIP-ES takes every contour of the tree. Holes and
    islands lie inside their outer contour's box, so the union of boxes is the same."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(rng.integers(2, 20, size=2))
        score = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (3, 3), 0)
        score = (score - score.min()) / (score.max() - score.min() + 1e-7)
        quantised = (score * 255).astype(np.uint8)
        _, binary = cv2.threshold(quantised, int(0.4 * quantised.max()), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        official = np.zeros(shape, dtype=np.float32)
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            official[y:min(y + h, shape[0] - 1), x:min(x + w, shape[1] - 1)] = 1
        np.testing.assert_array_equal(box_mask(shape, contour_boxes(score, 0.4)), official)


def test_weights_are_rounded_through_float16_as_clipes_loads_them(loaded):
    rounded = clipes_model(loaded)
    assert rounded is not loaded and rounded.weights_id != loaded.weights_id
    weight = loaded.model.visual.transformer.resblocks[0].attn.in_proj_weight
    copy = rounded.model.visual.transformer.resblocks[0].attn.in_proj_weight
    assert not torch.equal(weight, copy) and torch.equal(copy, weight.half().float())
    assert torch.equal(rounded.model.visual.positional_embedding, loaded.model.visual.positional_embedding)
    assert clipes_model(rounded) is rounded  # float16-exact weights (OpenAI's) are used as they are


def test_background_names_default_and_override():
    voc = load_vocabulary("voc")
    assert background_names(voc, SegmentationSettings()) == voc.background == CLIPES_BACKGROUND
    coco = load_vocabulary("coco")
    assert background_names(coco, SegmentationSettings()) == coco.background
    assert coco.prompt_name("snowboard") == "sknowboard"  # the official spelling
    own = Vocabulary(("tree", "robot"))
    assert background_names(own, SegmentationSettings()) == tuple(
        n for n in CLIPES_BACKGROUND if n != "tree")
    assert background_names(own, SegmentationSettings(background=("sky",))) == ("sky",)
    with pytest.raises(ValueError, match="both"):
        background_names(own, SegmentationSettings(background=("sky", "tree")))


@pytest.mark.parametrize("kwargs, reason", [
    ({"background_power": 0.0}, "background_power"), ({"box_threshold": 1.5}, "box_threshold"),
    ({"affinity_start": -1}, "affinity_start"), ({"background": ("sky", "sky")}, "more than once"),
])
def test_settings_reject_bad_values(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        SegmentationSettings(**kwargs)


def test_vocabulary_change_applies_to_next_image(loaded, text_cache):
    segmenter = ClipEsSegmenter(loaded, load_vocabulary("voc"), text_cache=text_cache)
    segmenter.set_vocabulary(load_vocabulary("cat,dog,robot", ""))
    rgb = read_image(os.path.join(IMAGES, "chelsea.jpg"))
    result = segmenter.segment(rgb, [0, 2])
    assert set(np.unique(result.mask)) <= {0, 1, 3}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        segmenter.segment(rgb, [3])


def test_clipes_reuses_tagclips_trunk_exactly_when_weights_allow(loaded):
    """With float16-exact weights (as OpenAI's are) CLIP-ES computes with the same model, so
    Perception hands it TagCLIP's blocks 1..11 instead of running them again: same masks,
    bit for bit. The float32 fixture gets a rounded copy, so nothing is shared there."""
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    exact = LoadedModel(model, loaded.device, loaded.dtype, loaded.weights_id + "-fp16", "fp16-exact")
    perception = Perception(exact, load_vocabulary("voc"), text_cache=TextFeatureCache(exact, None))
    rgb = read_image(os.path.join(IMAGES, "rocket.jpg"))
    assert perception._shares_trunk(rgb, "clipes")
    shared = perception.run(rgb, "clipes").segmentation
    alone = perception.segmenter.segment(rgb, shared.class_indices)
    np.testing.assert_array_equal(shared.cams, alone.cams)
    np.testing.assert_array_equal(shared.mask, alone.mask)
    fixture = Perception(loaded, load_vocabulary("voc"), text_cache=TextFeatureCache(loaded, None))
    assert not fixture._shares_trunk(rgb, "clipes")
