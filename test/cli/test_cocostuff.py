"""COCO-Stuff (`--vocab cocostuff`) through the verbs as a user runs them: the official scores
from `classify`, the official CAMs and masks from `segment --save-cams`, ground-truth 182-ids
mapped to the 171 classes by `tag --eval`, and `evaluate-masks` in the 171 and the paper's 27
classes on masks whose mIoU is worked out by hand."""
from __future__ import annotations

import json
import os
import re

import numpy as np
from PIL import Image

from tagclip_ros.core import dataset

from ..conftest import IMAGES, REFERENCE, WEIGHTS, reference_scores
from .helpers import CAM_TOLERANCE, MASK_AGREEMENT, run_cli, run_in_process

CLIPES_COCOSTUFF = os.path.join(REFERENCE, "clipes_cocostuff")
MODEL = ("--vocab", "cocostuff", "--weights", WEIGHTS, "--device", "cpu")
SCORE_ATOL = 1e-3  # the fixture README's bound for COCO-Stuff (official noise 1e-4 to 3e-4)


def test_classify_reproduces_the_official_cocostuff_scores(tmp_path, text_cache_dir):
    reference = reference_scores("cocostuff")
    out = tmp_path / "scores.json"
    images = [os.path.join(IMAGES, name) for name in reference["images"]]
    done = run_cli("classify", *images, *MODEL, "--json", str(out), cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert written["classes"] == reference["classes"]
    for result, expected in zip(written["results"], reference["scores"]):
        np.testing.assert_allclose(result["scores"], expected, rtol=0, atol=SCORE_ATOL)
        scores = np.asarray(expected)
        cut = scores.min() + 0.1 * (scores.max() - scores.min())  # the profile's tag threshold
        expected_tags = {reference["classes"][i] for i in np.flatnonzero(scores > cut)}
        assert {t["label"] for t in result["tags"]} == expected_tags


def test_segment_reproduces_the_official_cocostuff_cams_and_masks(tmp_path, text_cache_dir):
    with open(os.path.join(CLIPES_COCOSTUFF, "labels_cocostuff.json"), encoding="utf-8") as f:
        labels = {os.path.splitext(image)[0]: ids for image, ids in json.load(f).items()}
    tags = tmp_path / "tags.txt"  # 171-class indices, as classify.py --save_file writes them
    tags.write_text("".join(f"{stem} {' '.join(map(str, ids))}\n" for stem, ids in labels.items()))
    out = tmp_path / "masks"
    done = run_cli("segment", "--split", str(tags), "--img-root", IMAGES, "--out", str(out),
                   "--save-cams", *MODEL, cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    for stem, ids in labels.items():
        official = np.load(os.path.join(CLIPES_COCOSTUFF, f"{stem}_cams.npy"), allow_pickle=True).item()
        cams = dataset.load_cams(str(out / f"{stem}.npy"))
        assert cams["keys"].tolist() == ids == official["keys"].tolist()  # the official format
        np.testing.assert_allclose(cams["attn_highres"].astype(np.float32),
                                   official["attn_highres"].astype(np.float32), rtol=0, atol=CAM_TOLERANCE)
        mask = dataset.load_label_png(str(out / f"{stem}.png"))
        expected = np.asarray(Image.open(os.path.join(CLIPES_COCOSTUFF, f"{stem}_mask.png")))
        assert mask.min() >= 1  # no background: every pixel is a tag (class index + 1)
        assert np.mean(mask - 1 == expected) >= MASK_AGREEMENT


def test_crf_is_refused_for_cocostuff_in_one_sentence(tmp_path, text_cache_dir):
    tags = tmp_path / "tags.txt"
    tags.write_text("astronaut 154\n")
    done = run_cli("segment", "--split", str(tags), "--img-root", IMAGES, "--out", str(tmp_path / "m"),
                   "--crf", *MODEL, cache=text_cache_dir)
    assert done.returncode == 2 and "--crf is not available for cocostuff" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_tag_eval_maps_ground_truth_182_ids_to_the_171_classes(tmp_path, text_cache_dir):
    # 0-based 182-ids: person 0 (171: 0), street sign 11 (never annotated: dropped),
    # giraffe 24 (171: 23), tent 164 (171: 154), window-blind 179 (171: 168)
    split = tmp_path / "val.txt"
    split.write_text("astronaut 0 11 164\nrocket 24 179\n")
    out = tmp_path / "tags.txt"
    done = run_cli("tag", "--split", str(split), "--img-root", IMAGES, "--out", str(out), "--eval",
                   *MODEL, cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    scores = dataset.read_scores(dataset.scores_path(str(out)), 171)
    truth = {"astronaut": {0, 154}, "rocket": {23, 168}}
    predicted = {stem: {i for i, s in enumerate(v) if s > min(v) + 0.1 * (max(v) - min(v))}
                 for stem, v in scores.items()}
    tp = sum(len(predicted[s] & truth[s]) for s in truth)
    fp = sum(len(predicted[s] - truth[s]) for s in truth)
    fn = sum(len(truth[s] - predicted[s]) for s in truth)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    line = re.search(r"F1 ([\d.]+)  P ([\d.]+)  R ([\d.]+)  on 2 images", done.stdout)
    assert line, done.stdout[-2000:]
    assert [float(v) for v in line.groups()] == [round(100 * x, 2) for x in (f1, precision, recall)]
    tag_lines = dict(line.split(" ", 1) for line in out.read_text().splitlines())
    assert set(map(int, tag_lines["astronaut"].split())) == predicted["astronaut"]  # 171 indices


def write_png(path, values) -> None:
    Image.fromarray(np.asarray(values, dtype=np.uint8)).save(path)


def test_evaluate_masks_reports_171_and_27_class_miou(tmp_path, capsys):
    """Ground truth in 182-ids: person 0, zebra 23, giraffe 24 (both 'animal'), 255 unlabelled.
    Masks hold the 171 index + 1: person 1, zebra 23, giraffe 24. By hand: 171 classes person
    1, zebra 0, giraffe 1/4 → 41.67; 27 classes person 1, animal 1 → 100."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    write_png(gt / "a.png", [[0, 0, 23, 23], [24, 24, 255, 255]])
    write_png(pred / "a.png", [[1, 1, 24, 24], [24, 23, 1, 1]])
    code, out, err = run_in_process("evaluate-masks", "--pred", str(pred), "--gt", str(gt),
                                    "--vocab", "cocostuff", capsys=capsys)
    assert code == 0, err
    assert "mIoU 41.67 (171 COCO-Stuff classes) on 1 image" in out
    assert "mIoU 100.00 (27 coarse classes (COCO-Stuff-27, the paper's)) on 1 image" in out


def test_evaluate_masks_refuses_a_background_pixel_in_a_cocostuff_mask(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    write_png(gt / "a.png", [[0, 0]])
    write_png(pred / "a.png", [[0, 1]])  # 0 is background, which COCO-Stuff masks do not have
    write_png(gt / "b.png", [[0, 0]])
    write_png(pred / "b.png", [[1, 1]])
    code, out, err = run_in_process("evaluate-masks", "--pred", str(pred), "--gt", str(gt),
                                    "--vocab", "cocostuff", capsys=capsys)
    assert code == 1 and "a.png" in err and "outside" in err
    assert "mIoU 100.00 (171 COCO-Stuff classes) on 1 image" in out
