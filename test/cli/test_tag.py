"""`tagclip tag`: the official tag file, the paper's metrics, resuming, bad split files."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tagclip_ros.core import metrics

from ..conftest import IMAGES, reference_scores
from .helpers import STEMS, model_args, reference_tags, run_cli, run_in_process, snapshot, tag_lines


def test_tag_writes_the_official_tag_file_evaluates_and_resumes(tmp_path, text_cache_dir):
    split = tmp_path / "split.txt"
    split.write_text(tag_lines(), encoding="utf-8")  # ground truth = the reference tags
    out = tmp_path / "voc_val_tagclip.txt"
    tag = ("tag", "--split", str(split), "--img-root", IMAGES, "--out", str(out))

    done = run_cli(*tag, "--eval", *model_args(), cache=text_cache_dir)

    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == tag_lines()
    # mAP of the reference scores; the tags are the ground truth, so F1/P/R are 100
    reference = reference_scores("voc")
    scores = np.array([reference["scores"][reference["images"].index(s + ".jpg")] for s in STEMS])
    labels = np.zeros_like(scores)
    for row, stem in enumerate(STEMS):
        labels[row, reference_tags()[stem]] = 1
    expected = metrics.mean_average_precision(scores, labels)
    assert f"mAP {100 * expected:.2f} (over classes" in done.stdout
    assert "F1 100.00  P 100.00  R 100.00" in done.stdout
    assert "aeroplane" in done.stdout and "tvmonitor" in done.stdout

    # everything done: no model is needed (a missing checkpoint would fail), nothing changes
    before = snapshot(tmp_path)
    again = run_cli(*tag, *model_args("/nonexistent/ViT-B-16.pt"), cache=text_cache_dir)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 images already done" in again.stderr
    assert {k: v[0] for k, v in snapshot(tmp_path).items()} == {k: v[0] for k, v in before.items()}

    # an interrupted run: rocket's line cut short and no newline; only rocket is redone
    out.write_text(tag_lines(STEMS[:3]) + "rocket 1 3", encoding="utf-8")
    resumed = run_cli(*tag, *model_args(), cache=text_cache_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "unfinished last line" in resumed.stderr and "3 of 4 images already done" in resumed.stderr
    assert out.read_text(encoding="utf-8") == tag_lines()


def test_tag_of_image_paths_reports_missing_images_and_tags_the_rest(tmp_path, text_cache_dir):
    out = tmp_path / "tags.txt"
    missing = str(tmp_path / "not_there.jpg")
    done = run_cli("tag", os.path.join(IMAGES, "rocket.jpg"), missing,
                   os.path.join(IMAGES, "chelsea.jpg"), "--out", str(out), *model_args(),
                   cache=text_cache_dir)
    assert done.returncode == 1
    assert f"{missing}: no such file" in done.stderr
    assert "1 of 3 images could not be read" in done.stderr and "Traceback" not in done.stderr
    assert out.read_text(encoding="utf-8") == tag_lines(("rocket", "chelsea"))


@pytest.mark.parametrize("verb, text, message", [
    ("tag", "chelsea 0\ncoffee x\n", "line 2: class id 'x' is not an integer"),
    ("segment", "chelsea 0\ncoffee 19\nrocket 25\n", "line 3: class id 25 is outside [0, 20)"),
    ("segment", "chelsea\ncoffee\n", "has no class ids on any line"),
])
def test_bad_split_files_are_one_sentence(tmp_path, capsys, verb, text, message):
    split = tmp_path / "split.txt"
    split.write_text(text, encoding="utf-8")
    code, _, err = run_in_process(verb, "--split", str(split), "--img-root", IMAGES,
                                  "--out", str(tmp_path / "o"), *model_args(), capsys=capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
