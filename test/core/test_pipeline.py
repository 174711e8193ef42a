"""Bounded memory per frame: large images are downscaled for the model in the one resize the
model input needs anyway, tags and masks still describe the whole image (masks at its size),
and the explicit attention maps are computed exactly as the official materialised code does."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tagclip_ros.core import TagClip, TagClipSettings, load_vocabulary, read_image
from tagclip_ros.core.image import DEFAULT_MAX_INPUT_SIDE, downscale_note, model_input_size
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.core.segment import (MASK_BAND_ROWS, TOKENS_PER_PASS, dmar_segment, label_mask,
                                      tags_per_pass, upsample_maps)
from tagclip_ros.core.settings import SegmentationSettings
from tagclip_ros.core.transform import prepare_image
from tagclip_ros.core.vit import VisionTower, self_only_mask

from ..conftest import IMAGES

LIMIT = 640  # the limit the tests apply to their enlarged fixture image


@pytest.mark.parametrize("size, max_side, expected", [
    ((480, 640), 1280, (480, 640)),       # VOC/COCO-sized: native
    ((720, 1280), 1280, (720, 1280)),     # at the limit: native
    ((2160, 3840), 1280, (720, 1280)),    # 4K landscape
    ((3840, 2160), 1280, (1280, 720)),    # 4K portrait
    ((1000, 3000), 1280, (432, 1280)),    # short side ceil(1000·1280/3000/16)·16
    ((2000, 1000), 1000, (1008, 512)),    # a limit off the patch grid rounds up, as native does
    ((300, 451), None, (304, 464)),       # no limit: native, rounded up to patches
    ((5, 9000), 1280, (16, 1280)),        # at least one patch
])
def test_model_input_size(size, max_side, expected):
    assert model_input_size(*size, 16, max_side) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8000), st.integers(1, 8000), st.integers(1, 4000))
def test_model_input_never_exceeds_the_limit_and_keeps_smaller_images(height, width, max_side):
    got = model_input_size(height, width, 16, max_side)
    native = model_input_size(height, width, 16)
    assert max(got) <= max(-(-max_side // 16) * 16, 16)
    assert all(g <= n for g, n in zip(got, native))
    if max(height, width) <= max_side:
        assert got == native and downscale_note(height, width, 16, max_side) is None
    else:
        assert max(got) == max(-(-max_side // 16) * 16, 16)  # the longer side lands on the limit
        assert downscale_note(height, width, 16, max_side).startswith(f"{width}x{height} ")


def test_default_limit_keeps_the_papers_datasets_and_the_720p_fixture_native():
    for size in ((500, 375), (640, 640), (720, 1280)):
        assert model_input_size(*size, 16, DEFAULT_MAX_INPUT_SIDE) == model_input_size(*size, 16)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "640"])
def test_settings_reject_unusable_limits(value):
    with pytest.raises(ValueError, match="max_input_side"):
        TagClipSettings(max_input_side=value)
    with pytest.raises(ValueError, match="max_input_side"):
        SegmentationSettings(max_input_side=value)


@pytest.fixture(scope="module")
def large_image() -> tuple[np.ndarray, np.ndarray]:
    """A fixture photograph enlarged to 1353×900, and the model-sized copy (640×432) that one
    bicubic resize makes of it: what the model sees of the large one at LIMIT."""
    photo = Image.fromarray(read_image(os.path.join(IMAGES, "chelsea.jpg")))
    large = photo.resize((1353, 900), Image.Resampling.BICUBIC)
    height, width = model_input_size(900, 1353, 16, LIMIT)
    assert (height, width) == (432, 640)
    return np.asarray(large), np.asarray(large.resize((width, height), Image.Resampling.BICUBIC))


def test_downscale_is_the_model_inputs_own_single_resize(large_image):
    large, small = large_image
    assert torch.equal(prepare_image(large, 16, LIMIT), prepare_image(small, 16))
    assert torch.equal(prepare_image(large, 16), prepare_image(large, 16, 4000))


def test_tags_of_a_large_image_are_those_of_what_the_model_sees(loaded, text_cache, large_image):
    large, small = large_image
    voc = load_vocabulary("voc")
    limited = TagClip(loaded, voc, TagClipSettings(max_input_side=LIMIT), text_cache).classify(large)
    native = TagClip(loaded, voc, TagClipSettings(max_input_side=None), text_cache).classify(small)
    assert limited.grid == native.grid == (27, 40)
    np.testing.assert_array_equal(limited.scores, native.scores)
    assert limited.tags == native.tags


@pytest.mark.parametrize("method", ["clipes", "dmar"])
def test_masks_of_a_large_image_come_back_at_its_size(loaded, text_cache, large_image, method):
    """The patch-grid maps are those of the model-sized image, upsampled straight to the
    input's size (as CLIP-ES does at any scale), and the mask follows the official rule."""
    large, small = large_image
    voc = load_vocabulary("voc")
    limited = Perception(loaded, voc, TagClipSettings(max_input_side=LIMIT), text_cache=text_cache)
    native = Perception(loaded, voc, TagClipSettings(max_input_side=None), text_cache=text_cache)
    assert limited.segmenter.settings.max_input_side == LIMIT  # one limit for the frame
    big, ref = limited.run(large, method).segmentation, native.run(small, method).segmentation
    assert big.class_indices == ref.class_indices
    np.testing.assert_array_equal(big.grid_maps, ref.grid_maps)
    assert big.mask.shape == large.shape[:2] and big.mask.dtype == np.uint16
    cams = upsample_maps(ref.grid_maps, large.shape[:2])
    np.testing.assert_array_equal(big.cams, cams)
    np.testing.assert_array_equal(big.mask, label_mask(cams, big.class_indices, 1.0))
    assert set(np.unique(big.mask)) <= {0} | {i + 1 for i in big.class_indices}


@pytest.mark.parametrize("method", ["clipes", "dmar"])
def test_selected_tags_decide_the_mask(loaded, text_cache, large_image, method):
    """`select` (stable tags over a stream) replaces TagCLIP's tags before the mask: the mask is
    the one of the selected tags, and all background when none is selected."""
    _, rgb = large_image
    perception = Perception(loaded, load_vocabulary("voc"), text_cache=text_cache)
    plain = perception.run(rgb, method)
    chosen = plain.tags.tags[-1:]
    kept = perception.run(rgb, method, select=lambda r: dataclasses.replace(r, tags=chosen))
    assert kept.tags.tags == chosen and kept.segmentation.class_indices == [chosen[0].index]
    if method == "clipes":
        direct = perception.segmenter.segment(rgb, [chosen[0].index])
    else:
        direct = dmar_segment(plain.tags, rgb.shape[:2], perception.segmenter.settings, [chosen[0].index])
    np.testing.assert_array_equal(kept.segmentation.mask, direct.mask)
    empty = perception.run(rgb, method, select=lambda r: dataclasses.replace(r, tags=[]))
    assert empty.segmentation.class_indices == [] and empty.segmentation.mask.shape == rgb.shape[:2]
    assert not empty.segmentation.mask.any()
    assert perception.run(rgb, None, select=lambda r: dataclasses.replace(r, tags=[])).segmentation is None


def test_gradient_passes_take_fewer_copies_of_large_images_only():
    assert tags_per_pass(1601) == 4  # up to 640×640: the paper's datasets keep 4 per pass
    assert tags_per_pass(1025) == 4
    assert tags_per_pass(2305) == 2  # 1024×576
    assert tags_per_pass(3601) == 1  # 1280×720
    assert tags_per_pass(10 * TOKENS_PER_PASS) == 1


def reference_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor,
                        attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official computation with every head's maps materialised: output, and the
    head-averaged attention before the mask as `weights.sum(dim=1) / num_heads`."""
    batch, tokens, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    logits = (q * (width // heads) ** -0.5) @ k.transpose(-1, -2)
    weights = logits.softmax(dim=-1)
    averaged = weights.sum(dim=1) / heads
    if attn_mask is not None:
        weights = (logits + attn_mask).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, width)
    return attn.out_proj(out), averaged


@pytest.mark.parametrize("heads, width, tokens", [(12, 768, 401), (16, 256, 577), (3, 96, 197),
                                                  (1, 64, 301)])
@pytest.mark.parametrize("masked", [False, True])
def test_explicit_attention_equals_the_materialised_official_computation(heads, width, tokens,
                                                                         masked):
    """Bit for bit, with several heads: the output (the masked one taken head by head) and the
    average over heads (the official sum over every head's map, divided by their number)."""
    torch.manual_seed(heads)
    attn = torch.nn.MultiheadAttention(width, heads)
    x = torch.randn(1, tokens, width)
    mask = self_only_mask(tokens, x.device) if masked else None
    seen = []
    with torch.no_grad():
        out = VisionTower.attention(attn, x, mask, 0, lambda index, a: seen.append(a))
        expected_out, expected_average = reference_attention(attn, x, mask)
    assert torch.equal(out, expected_out)
    assert len(seen) == 1 and torch.equal(seen[0], expected_average)


def test_explicit_attention_of_a_batch_with_per_sample_masks():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(192, 12)
    x = torch.randn(3, 197, 192)
    mask = torch.where(torch.rand(3, 1, 197, 197) < 0.3, -1000.0, 0.0)
    seen = []
    with torch.no_grad():
        out = VisionTower.attention(attn, x, mask, 0, lambda index, a: seen.append(a))
        expected_out, expected_average = reference_attention(attn, x, mask)
    assert torch.equal(out, expected_out) and torch.equal(seen[0], expected_average)


def whole_image_label_mask(cams: np.ndarray, class_indices: list[int], power: float) -> np.ndarray:
    """The official evaluation rule over the whole image at once (float16 maps, background
    (1 − max)^power, argmax over [background, tags by class id], ties to the first)."""
    order = np.argsort(class_indices, kind="stable")
    stored = cams[order].astype(np.float16)
    background = np.power(1 - stored.max(axis=0, initial=0), power).astype(np.float16)
    winner = np.argmax(np.concatenate([background[None], stored]), axis=0)
    return np.array([0] + [class_indices[i] + 1 for i in order], np.uint16)[winner]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3 * MASK_BAND_ROWS + 5), st.integers(1, 40),
       st.sampled_from([1.0, 0.5, 3.0]), st.booleans(), st.randoms(use_true_random=False))
def test_label_mask_by_bands_is_the_whole_image_rule(tags, height, width, power, ties, rnd):
    """Taken band by band of rows, from maps fetched one at a time, the mask is the same."""
    rng = np.random.default_rng(rnd.getrandbits(32))
    cams = rng.random((tags, height, width), dtype=np.float32)
    if ties:
        cams = np.round(cams * 8) / 8  # many exact ties, decided by class order
    indices = [int(i) for i in rng.permutation(30)[:tags]]
    np.testing.assert_array_equal(label_mask(cams, indices, power),
                                  whole_image_label_mask(cams, indices, power))
