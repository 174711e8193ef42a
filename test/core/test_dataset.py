"""Dataset files: split/tag parsing and writing, resumable bookkeeping, mask PNGs and CAM files."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tagclip_ros.core import dataset
from tagclip_ros.core.dataset import SplitEntry, SplitFormatError
from tagclip_ros.core.overlay import palette


def test_tag_file_round_trip_in_the_official_format(tmp_path):
    path = str(tmp_path / "voc2012_val_tagclip.txt")
    tags = {"2007_000033": (0,), "2007_000187": (19, 4, 14), "2008_000009": ()}

    dataset.write_tag_file(path, tags)

    # official classify.py: the stem, then the ids in ascending order, one image per line
    assert open(path, encoding="utf-8").read() == "2007_000033 0\n2007_000187 4 14 19\n2008_000009\n"
    entries = dataset.read_split(path, num_classes=20)
    assert [(e.stem, e.labels, e.line) for e in entries] == [
        ("2007_000033", (0,), 1), ("2007_000187", (4, 14, 19), 2), ("2008_000009", (), 3)]


def test_split_file_keeps_label_order_skips_blank_lines_and_collapses_repeats(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("000001 11 14\n\n000003 17 8 17\n000004\n", encoding="utf-8")
    entries = dataset.read_split(str(path), num_classes=20)
    assert entries == [SplitEntry("000001", (11, 14), 1), SplitEntry("000003", (17, 8), 3),
                       SplitEntry("000004", (), 4)]


@pytest.mark.parametrize("text, message", [
    ("a 1\nb one\n", "line 2: class id 'one' is not an integer"),
    ("a 1\nb 2\nc 20\n", "line 3: class id 20 is outside [0, 20)"),
    ("a -1\n", "line 1: class id -1 is outside"),
    ("a 1\nb 2\na 3\n", "line 3: image 'a' is listed again (first on line 1)"),
    ("../escape 1\n", "line 1: image stem '../escape'"),
    ("/abs/path 1\n", "line 1: image stem '/abs/path'"),
    ("\n\n", "lists no images"),
])
def test_malformed_split_lines_are_named_by_line(tmp_path, text, message):
    path = tmp_path / "split.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SplitFormatError) as error:
        dataset.read_split(str(path), num_classes=20)
    assert message in str(error.value) and str(path) in str(error.value)


def test_progress_of_an_interrupted_tag_file(tmp_path):
    path = tmp_path / "tags.txt"
    assert dataset.read_progress(str(path)) == ({}, False)
    path.write_text("a 1\nb 2\na 3 4\nc 1", encoding="utf-8")  # killed while writing "c 1x"
    tags, partial = dataset.read_progress(str(path), num_classes=20)
    assert tags == {"a": (3, 4), "b": (2,)} and partial
    path.write_text("a 1\n", encoding="utf-8")
    assert dataset.read_progress(str(path)) == ({"a": (1,)}, False)


def test_merge_puts_this_runs_images_first_and_keeps_the_others():
    old = {"z": (1,), "b": (2,), "a": (3,)}
    new = {"b": (9,), "c": (4,)}
    merged = dataset.merge_in_order(["a", "b", "c", "d"], new, old)
    assert list(merged.items()) == [("a", (3,)), ("b", (9,)), ("c", (4,)), ("z", (1,))]


def test_scores_file_round_trip_ignores_a_broken_last_line(tmp_path):
    path = str(tmp_path / "tags.txt.scores.jsonl")
    dataset.write_scores(path, {"a": [0.25, 0.5], "b": [1.0, 0.0]})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"stem": "c", "scor')
    assert dataset.read_scores(path) == {"a": [0.25, 0.5], "b": [1.0, 0.0]}
    assert dataset.scores_path("out/tags.txt") == "out/tags.txt.scores.jsonl"


def test_only_whole_lines_count_even_when_a_cut_line_still_reads(tmp_path):
    tags, scores = tmp_path / "tags.txt", tmp_path / "tags.txt.scores.jsonl"
    # killed while appending "c 1 14\n" and its scores line: both cuts still parse
    tags.write_text("a 1\nc 1", encoding="utf-8")
    whole = dataset.scores_line("a", [0.5, 0.25, 0.0]) + dataset.scores_line("b", [1.0, 0.0])
    scores.write_text(whole + dataset.scores_line("c", [0.0, 1.0, 0.5]).rstrip("\n"), encoding="utf-8")

    assert dataset.read_progress(str(tags), num_classes=20) == ({"a": (1,)}, True)
    assert dataset.complete_lines(str(scores))[1]
    # b's line is whole but holds 2 scores, not the vocabulary's 3: scored again
    assert dataset.read_scores(str(scores), num_classes=3) == {"a": [0.5, 0.25, 0.0]}
    assert dataset.complete_lines(str(tmp_path / "missing")) == ([], False)


def test_every_cut_of_a_mask_or_cam_file_is_not_done(tmp_path):
    mask, cams = tmp_path / "x.png", tmp_path / "x.npy"
    dataset.save_label_png(str(mask), np.array([[0, 1, 8], [15, 20, 255]], dtype=np.uint16))
    dataset.save_cams(str(cams), (3, 11), np.random.default_rng(0).random((2, 5, 7), dtype=np.float32))
    cut = tmp_path / "cut"
    for whole in (mask, cams):
        data = whole.read_bytes()
        assert dataset.output_complete(str(whole))
        for size in range(len(data)):  # what a writer killed after `size` bytes leaves
            cut.with_suffix(whole.suffix).write_bytes(data[:size])
            assert not dataset.output_complete(str(cut.with_suffix(whole.suffix))), (whole.name, size)
    assert dataset.outputs_complete([str(mask), str(cams)])
    assert not dataset.outputs_complete([str(mask), str(tmp_path / "missing.npy")])


class OpensAFile:
    """Pickled, it says "call open(marker, 'w')": loading it would create the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_cam_files_are_checked_without_unpickling_them(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "x.npy"
    np.save(path, np.array(OpensAFile(str(marker)), dtype=object), allow_pickle=True)
    assert dataset.output_complete(str(path))  # a whole pickle: done, and never run
    assert not marker.exists()
    np.save(path, np.zeros(3))  # a whole .npy, but not a CAM file's pickled dict
    assert not dataset.output_complete(str(path))


def test_atomic_write_goes_through_a_hidden_partial_file(tmp_path):
    path = tmp_path / "x.png"
    seen = []

    def write(handle) -> None:
        seen.extend(os.listdir(tmp_path))  # what is there while writing
        handle.write(b"ok")

    dataset.atomic_write(str(path), write)
    [temporary] = seen
    assert temporary.startswith(".x.png.") and temporary.endswith(".partial")
    assert dataset.partial_target(temporary) == "x.png"
    assert os.listdir(tmp_path) == ["x.png"] and path.read_bytes() == b"ok"


def test_stale_partials_of_the_runs_outputs_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".a.png.x1_y.partial", tmp_path / "sub" / ".b.npy.q.partial"]
    kept = [tmp_path / "a.png", tmp_path / ".c.png.z.partial", tmp_path / ".a.png",
            tmp_path / "a.png.partial", tmp_path / ".partial"]
    for path in stale + kept:
        path.write_bytes(b"x")
    outputs = [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.npy"), str(tmp_path / "none" / "c")]

    assert dataset.remove_stale_partials(outputs) == 2

    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert [dataset.partial_target(n) for n in (".a.png.x.partial", ".partial", ".x.partial")] == \
        ["a.png", None, None]


def test_label_png_is_a_voc_palette_image_holding_the_ids(tmp_path):
    path = str(tmp_path / "sub" / "mask.png")
    mask = np.array([[0, 1, 8], [15, 20, 255]], dtype=np.uint16)
    dataset.save_label_png(path, mask)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), mask)
        assert np.array_equal(np.array(image.getpalette()[:3 * 21]).reshape(21, 3), palette(21))
    assert np.array_equal(dataset.load_label_png(path), mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~dataset.current_umask()  # not mkstemp's 0600
    with pytest.raises(ValueError, match="values in"):
        dataset.save_label_png(path, np.array([[256]]))


def test_colour_coded_masks_are_refused(tmp_path):
    path = str(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="not a RGB image"):
        dataset.load_label_png(path)


def test_cams_file_loads_like_the_official_ones(tmp_path):
    path = str(tmp_path / "img.npy")
    cams = np.random.default_rng(0).random((2, 5, 7), dtype=np.float32)
    dataset.save_cams(path, (3, 11), cams)
    loaded = np.load(path, allow_pickle=True).item()
    assert loaded["keys"].tolist() == [3, 11] and loaded["keys"].dtype == np.int64
    assert loaded["cams"].dtype == np.float16 and loaded["cams"].shape == (2, 5, 7)
    np.testing.assert_allclose(loaded["cams"], cams, atol=1e-3)
    assert loaded["attn_highres"] is loaded["cams"]  # the official name, stored once
    assert os.path.getsize(path) < cams.size * 2 + 1024


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path):
    path = tmp_path / "out.png"

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        dataset.atomic_write(str(path), broken)
    assert list(tmp_path.iterdir()) == []


def test_split_done_skips_finished_items_unless_overwriting():
    items = ["a", "b", "c"]
    assert dataset.split_done(items, lambda s: s != "b", overwrite=False) == (["b"], 2)
    assert dataset.split_done(items, lambda s: True, overwrite=True) == (items, 0)


def test_segment_outputs_and_image_paths():
    assert dataset.segment_outputs("out", "x", save_cams=False) == [os.path.join("out", "x.png")]
    assert dataset.segment_outputs("out", "x", save_cams=True)[1] == os.path.join("out", "x.npy")
    assert dataset.image_path("root", "2007_000033", ".jpg") == os.path.join("root", "2007_000033.jpg")
    assert dataset.image_path("root", "a", "png") == os.path.join("root", "a.png")


def test_images_with_the_same_stem_are_refused():
    assert [e.stem for e in dataset.stems_of(["x/a.jpg", "y/b.png"])] == ["a", "b"]
    with pytest.raises(ValueError, match="same name 'a'"):
        dataset.stems_of(["x/a.jpg", "y/a.png"])


def test_mask_class_limit():
    dataset.check_mask_classes(254)
    with pytest.raises(ValueError, match="at most 254 classes"):
        dataset.check_mask_classes(255)


def test_label_matrix_from_split_labels():
    assert dataset.label_matrix([SplitEntry("a", (2, 0))], 3).tolist() == [[1, 0, 1]]
