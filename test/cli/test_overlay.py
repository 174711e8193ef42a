"""`tagclip overlay`: a tinted picture with a legend."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from tagclip_ros.core import load_vocabulary
from tagclip_ros.core.overlay import Caption, render_overlay

from ..conftest import IMAGES
from .helpers import model_args, run_cli


def test_overlay_writes_a_tinted_picture_with_a_legend(tmp_path, text_cache_dir):
    image = os.path.join(IMAGES, "chelsea.jpg")
    done = run_cli("overlay", image, "--out", str(tmp_path), *model_args(), cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    assert "aeroplane" in done.stdout  # a reference tag of chelsea
    with Image.open(tmp_path / "chelsea_overlay.png") as written:
        picture = np.asarray(written.convert("RGB"))
    original = np.asarray(Image.open(image).convert("RGB"))
    assert picture.shape == original.shape
    # stdout: "<path>: <label> <score>, ... -> <picture>", the captions the legend shows
    captions_text = done.stdout.split(f"{image}: ", 1)[1].split(" -> ")[0].split(", ")
    classes = load_vocabulary("voc").classes
    captions = [Caption(classes.index(label) + 1, label, score)
                for label, score in (c.rsplit(" ", 1) for c in captions_text)]
    tags = tmp_path / "tags.txt"
    tags.write_text(f"chelsea {' '.join(str(c.class_id - 1) for c in sorted(captions))}\n")
    done = run_cli("segment", "--split", str(tags), "--img-root", IMAGES, "--out", str(tmp_path / "m"),
                   *model_args(), cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    mask = np.asarray(Image.open(tmp_path / "m" / "chelsea.png")).astype(np.int64)
    assert (mask > 0).any() and (mask == 0).any()
    # the tint exactly on the mask's pixels (those `tagclip segment` labels for the same tags)
    # and a legend line per tag: the picture drawn from them, pixel for pixel
    expected = render_overlay(original, mask, captions)
    assert np.mean(np.all(picture == expected, axis=2)) >= 0.999
