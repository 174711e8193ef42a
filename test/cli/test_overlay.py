"""`tagclip overlay`: a tinted picture with a legend."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

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
    changed = np.any(picture != original, axis=2)
    assert 0.2 < changed.mean() < 1.0  # mask colours blended in, some background left alone
    legend = picture[:40, :60].astype(int)
    assert (legend == 255).all(axis=2).any()  # white caption text / swatch border
