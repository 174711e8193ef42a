"""`tagclip evaluate-masks`: mIoU of reference masks, and masks that cannot be used."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .helpers import CLIPES, STEMS, run_in_process


def test_evaluate_masks_of_reference_masks_and_a_wrong_size_mask(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for stem in STEMS:
        for folder in (pred, gt):
            os.symlink(os.path.join(CLIPES, f"{stem}_mask.png"), folder / f"{stem}.png")
    evaluate = ("evaluate-masks", "--pred", str(pred), "--gt", str(gt), "--vocab", "voc")

    code, out, err = run_in_process(*evaluate, capsys=capsys)
    assert code == 0, err
    assert "mIoU 100.00 on 4 images" in out and "background" in out

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(pred / "small.png")
    Image.fromarray(np.zeros((20, 12), np.uint8)).save(gt / "small.png")
    (tmp_path / "split.txt").write_text("chelsea\nsmall\nabsent\n", encoding="utf-8")
    code, out, err = run_in_process(*evaluate, "--split", str(tmp_path / "split.txt"), capsys=capsys)
    assert code == 1
    assert f"{pred / 'small.png'}: mask is 12x10 pixels but its ground truth" in err
    assert f"{pred / 'absent.png'}: no such file" in err
    assert "2 of 3 images could not be evaluated" in err
    assert "mIoU 100.00 on 1 image " in out
