"""Image input: every layout becomes RGB, sizes round up to patches, bad input is an ImageError."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagclip_ros.core import ImageError, read_image, to_rgb
from tagclip_ros.core.transform import prepare_image


def test_gray_rgba_and_16_bit_become_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (to_rgb(gray)[:, :, 2] == gray).all()
    rgba = np.dstack([np.full((3, 4, 3), 7, np.uint8), np.zeros((3, 4), np.uint8)])
    assert to_rgb(rgba).shape == (3, 4, 3) and (to_rgb(rgba) == 7).all()
    deep = np.full((3, 4, 3), 0x1234, np.uint16)
    assert (to_rgb(deep) == 0x12).all()


def test_model_input_rounds_up_to_whole_patches():
    assert prepare_image(np.zeros((300, 451, 3), np.uint8), 16).shape == (1, 3, 304, 464)
    assert prepare_image(np.zeros((5, 9, 3), np.uint8), 16).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("array", [np.zeros((0, 0, 3), np.uint8), np.zeros((4, 4, 2), np.uint8),
                                   np.zeros((4, 4, 3), np.float64)])
def test_unusable_arrays_are_rejected(array):
    with pytest.raises(ImageError):
        to_rgb(array)


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(str(broken))
    with pytest.raises(ImageError, match="no such file"):
        read_image(str(tmp_path / "missing.png"))


@pytest.mark.parametrize("mode, size", [("L", (64, 48)), ("RGBA", (64, 48)), ("RGB", (10, 7)),
                                        ("P", (40, 40))])
def test_classify_any_mode_and_tiny_images(voc_tagger, tmp_path, mode, size):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path = tmp_path / f"image_{mode}.png"
    Image.fromarray(pixels).convert(mode).save(path)
    result = voc_tagger.classify(read_image(str(path)))
    assert result.scores.shape == (20,) and result.tags
    with Image.open(path) as saved:  # the same pixels as RGB (grey repeated, palette looked up,
        rgb = np.asarray(saved.convert("RGB"))  # alpha dropped), classified directly
    assert rgb.shape == (size[1], size[0], 3)
    assert np.array_equal(result.scores, voc_tagger.classify(rgb).scores)
