"""`tagclip classify` as a user runs it: a separate process, real files, exit codes."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ..conftest import IMAGES, WEIGHTS, reference_scores
from .helpers import run_cli


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_json_output_reproduces_reference_scores(dataset, tmp_path, text_cache_dir):
    reference = reference_scores(dataset)
    out = tmp_path / "scores.json"
    images = [os.path.join(IMAGES, name) for name in reference["images"]]
    done = run_cli("classify", *images, "--vocab", dataset, "--weights", WEIGHTS,
                   "--device", "cpu", "--json", str(out), cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert written["classes"] == reference["classes"]
    for result, image, expected in zip(written["results"], images, reference["scores"]):
        assert result["image"] == image
        np.testing.assert_allclose(result["scores"], expected, rtol=0, atol=1e-4)
        labels = [t["label"] for t in result["tags"]]
        assert labels and set(labels) <= set(reference["classes"])
        assert os.path.basename(image) in done.stdout


def test_unreadable_images_are_skipped_and_reported(tmp_path, text_cache_dir):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not an image")
    out = tmp_path / "out.json"
    good = os.path.join(IMAGES, "chelsea.jpg")
    done = run_cli("classify", str(broken), good, str(tmp_path / "missing.png"),
                   "--weights", WEIGHTS, "--json", str(out), cache=text_cache_dir)
    assert done.returncode == 1
    assert "broken.jpg" in done.stderr and "missing.png" in done.stderr
    assert "2 of 3 images could not be read" in done.stderr
    assert "Traceback" not in done.stderr
    assert [r["image"] for r in json.loads(out.read_text())["results"]] == [good]


@pytest.mark.parametrize("args, message", [
    (("--weights", "/nonexistent/ViT-B-16.pt"), "does not exist"),
    (("--weights", WEIGHTS, "--vocab", "cat,cat"), "more than once"),
    (("--weights", WEIGHTS, "--device", "cuda:7"), "device"),
])
def test_usage_errors_are_one_sentence(args, message, text_cache_dir):
    done = run_cli("classify", os.path.join(IMAGES, "chelsea.jpg"), *args, cache=text_cache_dir)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_folder_argument_and_progress_bar(tmp_path, text_cache_dir):
    for i in range(5):
        os.symlink(os.path.join(IMAGES, "chelsea.jpg"), tmp_path / f"img{i}.jpg")
    done = run_cli("classify", str(tmp_path), "--weights", WEIGHTS, cache=text_cache_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("img") == 5 and "5/5" in done.stderr
