"""The `tagclip` command line as a user runs it: a separate process, real files, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tagclip_ros.core import metrics
from tagclip_ros.core.segment import label_mask

from .conftest import IMAGES, WEIGHTS, reference_scores


def run_cli(*args: str, cache: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tagclip_ros.cli", *args, "--cache-dir", cache]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


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


# ---------------------------------------------------------------------------------------------
# Dataset verbs: tag, segment, evaluate-masks, overlay

CLIPES = os.path.join(os.path.dirname(WEIGHTS), "clipes")
STEMS = ("astronaut", "chelsea", "coffee", "rocket")
CAM_TOLERANCE = 1e-2
MASK_AGREEMENT = 0.995


def reference_tags() -> dict[str, list[int]]:
    with open(os.path.join(CLIPES, "labels_voc.json"), encoding="utf-8") as f:
        return {os.path.splitext(image)[0]: ids for image, ids in json.load(f).items()}


def tag_lines(stems=STEMS) -> str:
    """The tag file the official classify.py writes for these fixture images."""
    tags = reference_tags()
    return "".join(" ".join([stem, *map(str, tags[stem])]) + "\n" for stem in stems)


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file in a folder."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def model_args(weights: str = WEIGHTS) -> tuple[str, ...]:
    return ("--vocab", "voc", "--weights", weights, "--device", "cpu")


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


def run_in_process(*args: str, capsys) -> tuple[int, str, str]:
    """`tagclip` run in this process, for the verbs and errors that load no model (a
    subprocess would spend seconds importing torch and open_clip for nothing)."""
    from tagclip_ros.cli import main
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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
