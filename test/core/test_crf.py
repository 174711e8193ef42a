"""Dense CRF (the paper's "+CRF"): behaviour on a constructed case and equality with the
official CLIP-ES eval_cam_with_crf.py recipe on the reference CAMs."""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest

from tagclip_ros.core import read_image
from tagclip_ros.core.crf import CrfSettings, crf_label_mask, crf_refine, kernel_image, require_crf
from tagclip_ros.core.errors import CrfUnavailableError

from ..conftest import IMAGES, REFERENCE

HEIGHT, WIDTH, EDGE = 40, 60, 30


def edge_case(rgb_left: tuple, rgb_right: tuple) -> tuple[np.ndarray, np.ndarray]:
    """An image with a colour edge at column EDGE and noisy two-class probabilities whose
    boundary sits 10 px left of it."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, :EDGE], image[:, EDGE:] = rgb_left, rgb_right
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, (HEIGHT, WIDTH))
    right = np.where(np.arange(WIDTH)[None, :] >= EDGE - 10, 0.65, 0.35) + noise
    return image, np.stack([1 - right, right]).astype(np.float32)


@pytest.mark.parametrize("official", [True, False])
def test_crf_snaps_a_noisy_boundary_to_a_strong_colour_edge(official):
    image, probabilities = edge_case((200, 30, 30), (30, 200, 30))
    expected = np.broadcast_to(np.arange(WIDTH)[None, :] >= EDGE, (HEIGHT, WIDTH))
    assert np.mean(probabilities.argmax(0) == expected) < 0.85  # the input is off by 10 columns

    labels = crf_refine(image, probabilities, CrfSettings(official_colour_wrap=official))

    assert labels.shape == (HEIGHT, WIDTH)
    assert np.array_equal(labels, expected)


def test_without_an_edge_the_boundary_does_not_snap_there():
    image, probabilities = edge_case((120, 120, 120), (120, 120, 120))
    labels = crf_refine(image, probabilities)
    assert not np.array_equal(labels, np.arange(WIDTH)[None, :] >= EDGE)


def test_official_kernel_image_wraps_the_mean_subtracted_bgr_pixels():
    black_white = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    # B − 104.008, G − 116.669, R − 122.675, truncated toward zero, modulo 256, BGR order
    assert kernel_image(black_white).tolist() == [[[152, 140, 134], [150, 138, 132]]]
    assert kernel_image(black_white, official_colour_wrap=False).tolist() == black_white.tolist()


@pytest.mark.parametrize("stem", ["chelsea", "rocket"])
def test_crf_mask_equals_the_official_recipe(stem):
    """The official script's steps, written out with the same binding, on the reference CAMs."""
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as utils

    saved = np.load(os.path.join(REFERENCE, "clipes", f"{stem}_cams.npy"), allow_pickle=True).item()
    cams = saved["attn_highres"]
    image_path = os.path.join(IMAGES, f"{stem}.jpg")
    image = cv2.imread(image_path, cv2.IMREAD_COLOR).astype(np.float32)
    image -= (104.008, 116.669, 122.675)
    image = np.ascontiguousarray(image.astype(np.uint8))
    probabilities = np.concatenate([np.power(1 - np.max(cams, axis=0, keepdims=True), 1), cams])
    channels, height, width = probabilities.shape
    crf = dcrf.DenseCRF2D(width, height, channels)
    crf.setUnaryEnergy(np.ascontiguousarray(utils.unary_from_softmax(probabilities)))
    crf.addPairwiseGaussian(sxy=1, compat=3)
    crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=image, compat=4)
    marginals = np.array(crf.inference(10)).reshape(channels, height, width)
    official = np.pad(saved["keys"] + 1, (1, 0))[np.argmax(marginals, axis=0)]

    ours = crf_label_mask(read_image(image_path), cams, list(saved["keys"]))

    assert ours.shape == official.shape
    assert np.array_equal(ours, official)
    assert np.mean(ours == crf_label_mask(read_image(image_path), cams, list(saved["keys"]),
                                          settings=CrfSettings(official_colour_wrap=False))) < 1


def test_missing_binding_is_one_sentence_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)  # makes the import fail
    with pytest.raises(CrfUnavailableError, match="pip install pydensecrf2"):
        require_crf()


def test_probabilities_must_cover_the_image():
    with pytest.raises(ValueError, match="do not cover"):
        crf_refine(np.zeros((4, 5, 3), np.uint8), np.zeros((2, 4, 6), np.float32))
