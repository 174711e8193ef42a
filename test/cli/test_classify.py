"""`tagclip classify` as a user runs it: a separate process (in this one for argument errors),
real files, exit codes."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tagclip_ros.core import TagClip, TagClipSettings, load_vocabulary, read_image

from ..conftest import IMAGES, WEIGHTS, code_running_checkpoint, reference_scores
from .helpers import refused_in_process, run_cli


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


def test_a_checkpoint_whose_pickle_runs_code_is_refused_unrun(tmp_path, text_cache_dir):
    path, marker = code_running_checkpoint(str(tmp_path))
    done = run_cli("classify", os.path.join(IMAGES, "chelsea.jpg"), "--weights", path, cache=text_cache_dir)
    assert done.returncode == 2 and "could not be read as a torch checkpoint" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not os.path.exists(marker)


def test_offline_without_weights_fails_at_once_in_one_sentence(offline_hub, text_cache_dir):
    """No network, no weights given and none in the hub cache: one attempt, then one sentence
    saying what to set (huggingface_hub alone would retry each file open_clip tries for half a
    minute, logging every try)."""
    done = run_cli("classify", os.path.join(IMAGES, "chelsea.jpg"), "--device", "cpu",
                   cache=text_cache_dir, env=offline_hub)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: could not get pretrained weights ViT-B-16/openai: "
                                  f"{offline_hub['HF_ENDPOINT']} cannot be reached (")
    assert done.stderr.endswith("set the weights path (--weights or TAGCLIP_WEIGHTS; for the "
                                "node, restart it with -p model.weights:=PATH) to a local "
                                "checkpoint\n")


def test_tagclip_weights_is_the_weights_file_when_none_is_given(tmp_path, offline_hub, text_cache_dir):
    """`TAGCLIP_WEIGHTS=... tagclip classify` scores as `--weights ...` does (the reference
    scores are those of `--weights WEIGHTS`: test_json_output_reproduces_reference_scores)."""
    reference = reference_scores("voc")
    out = tmp_path / "scores.json"
    done = run_cli("classify", os.path.join(IMAGES, reference["images"][0]), "--vocab", "voc",
                   "--device", "cpu", "--json", str(out), cache=text_cache_dir,
                   env={**offline_hub, "TAGCLIP_WEIGHTS": WEIGHTS})
    assert done.returncode == 0, done.stderr
    scores = json.loads(out.read_text())["results"][0]["scores"]
    np.testing.assert_allclose(scores, reference["scores"][0], rtol=0, atol=1e-4)


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


def test_max_input_side_downscales_large_images(tmp_path, text_cache_dir, loaded, text_cache):
    """A 1353×900 image: at --max-input-side 640 the model sees it at 640×432 (said once on
    stderr), with 0 at its native size; the scores are the core's for that setting."""
    photo = Image.open(os.path.join(IMAGES, "chelsea.jpg")).convert("RGB")
    large = tmp_path / "large.png"
    photo.resize((1353, 900), Image.Resampling.BICUBIC).save(large)
    scores = {}
    for limit, copies in (("640", 2), ("0", 1)):  # two: the note is said once per size
        out = tmp_path / f"{limit}.json"
        done = run_cli("classify", *[str(large)] * copies, "--weights", WEIGHTS, "--device", "cpu",
                       "--max-input-side", limit, "--json", str(out), cache=text_cache_dir)
        assert done.returncode == 0, done.stderr
        note = "1353x900 images are downscaled to 640x432 for the model (max_input_side 640)"
        assert done.stderr.count(note) == (1 if limit == "640" else 0), done.stderr
        scores[limit] = [r["scores"] for r in json.loads(out.read_text())["results"]]
        settings = TagClipSettings(max_input_side=int(limit) or None)
        expected = TagClip(loaded, load_vocabulary("voc"), settings, text_cache).classify(
            read_image(str(large))).scores
        for got in scores[limit]:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert not np.allclose(scores["640"][0], scores["0"][0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("value", ["-3", "big"])
def test_max_input_side_must_be_a_number_of_pixels(value, text_cache_dir, capsys):
    err = refused_in_process("classify", os.path.join(IMAGES, "chelsea.jpg"), "--weights", WEIGHTS,
                             "--max-input-side", value, "--cache-dir", text_cache_dir, capsys=capsys)
    assert "--max-input-side" in err and "Traceback" not in err
