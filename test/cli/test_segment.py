"""`tagclip segment`: reference masks and CAMs, the official label-mask rule, resuming, +CRF."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from tagclip_ros.core.segment import label_mask

from ..conftest import IMAGES
from .helpers import (CAM_TOLERANCE, CLIPES, MASK_AGREEMENT, STEMS, model_args, reference_tags, run_cli,
                      snapshot, tag_lines)


def test_segment_reproduces_reference_masks_and_cams_and_resumes(tmp_path, text_cache_dir):
    tags = tmp_path / "tags.txt"
    tags.write_text(tag_lines(), encoding="utf-8")
    out = tmp_path / "masks"
    segment = ("segment", "--split", str(tags), "--img-root", IMAGES, "--out", str(out), "--save-cams")

    done = run_cli(*segment, *model_args(), cache=text_cache_dir)

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{e}" for s in STEMS for e in (".png", ".npy"))
    for stem, ids in reference_tags().items():
        expected_mask = np.asarray(Image.open(os.path.join(CLIPES, f"{stem}_mask.png")))
        with Image.open(out / f"{stem}.png") as written:
            assert written.mode == "P"
            mask = np.asarray(written)
        agreement = float(np.mean(mask == expected_mask))
        assert agreement >= MASK_AGREEMENT, f"{stem}: masks agree on {agreement:.4%} of pixels"
        cams = np.load(out / f"{stem}.npy", allow_pickle=True).item()
        expected = np.load(os.path.join(CLIPES, f"{stem}_cams.npy"), allow_pickle=True).item()
        assert cams["keys"].tolist() == ids and cams["cams"].dtype == np.float16
        np.testing.assert_array_equal(mask, label_mask(cams["cams"], ids, 1.0))  # the official rule
        assert cams["cams"].shape == expected["attn_highres"].shape
        np.testing.assert_allclose(cams["cams"].astype(np.float32),
                                   expected["attn_highres"].astype(np.float32),
                                   rtol=0, atol=CAM_TOLERANCE, err_msg=stem)

    before = snapshot(out)
    again = run_cli(*segment, *model_args("/nonexistent/ViT-B-16.pt"), cache=text_cache_dir)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 images already done" in again.stderr
    assert snapshot(out) == before  # not even rewritten


def test_segment_empty_tags_missing_images_and_crf(tmp_path, text_cache_dir):
    from tagclip_ros.core import read_image
    from tagclip_ros.core.crf import crf_label_mask

    tags = tmp_path / "tags.txt"
    tags.write_text("chelsea 0 19\ncoffee\nnot_there 3\n", encoding="utf-8")
    out = tmp_path / "masks"
    done = run_cli("segment", "--split", str(tags), "--img-root", IMAGES, "--out", str(out),
                   "--save-cams", "--crf", *model_args(), cache=text_cache_dir)

    assert done.returncode == 1
    assert "not_there.jpg: no such file" in done.stderr and "1 of 3 images" in done.stderr
    assert "coffee: no tags on line 2; writing an all-background mask" in done.stderr
    background = np.asarray(Image.open(out / "coffee.png"))
    assert background.shape == read_image(os.path.join(IMAGES, "coffee.jpg")).shape[:2]
    assert not background.any()
    assert np.load(out / "coffee.npy", allow_pickle=True).item()["cams"].shape[0] == 0
    assert not (out / "not_there.png").exists()
    # --crf: the CRF label mask of the saved CAMs, which differs from the plain label mask
    cams = np.load(out / "chelsea.npy", allow_pickle=True).item()
    rgb = read_image(os.path.join(IMAGES, "chelsea.jpg"))
    mask = np.asarray(Image.open(out / "chelsea.png"))
    assert np.array_equal(mask, crf_label_mask(rgb, cams["cams"], list(cams["keys"])))
    plain = np.asarray(Image.open(os.path.join(CLIPES, "chelsea_mask.png")))
    assert np.mean(mask == plain) < 0.95
