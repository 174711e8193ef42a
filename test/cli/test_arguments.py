"""What every verb does with a mistyped argument, as a user gives it (issue 19, items 1 and 11):
a --vocab that names no profile nor an existing file is refused with one sentence before the
model loads; a wrong flag gets the verb's own usage."""
from __future__ import annotations

import json
import os

import pytest

from tagclip_ros.core.vocab import COCO_CLASSES

from ..conftest import IMAGES, WEIGHTS
from .helpers import run_in_process

IMAGE = os.path.join(IMAGES, "chelsea.jpg")


def verb_args(verb: str, folder) -> tuple[str, ...]:
    """A verb's required arguments, with inputs that exist where it checks them."""
    out = str(folder / "out")
    return {"classify": ("classify", IMAGE),
            "tag": ("tag", IMAGE, "--out", out),
            "segment": ("segment", "--split", str(folder / "tags.txt"), "--img-root", IMAGES, "--out", out),
            "overlay": ("overlay", IMAGE, "--out", out),
            "bag": ("bag", str(folder / "in"), "--out", out),
            "evaluate-masks": ("evaluate-masks", "--pred", str(folder), "--gt", str(folder)),
            "doctor": ("doctor",)}[verb]


VOCAB_VERBS = ("classify", "tag", "segment", "overlay", "bag", "evaluate-masks")


@pytest.mark.parametrize("verb", VOCAB_VERBS)
@pytest.mark.parametrize("vocab, sentence", [
    ("vco", "vocabulary 'vco' is not a dataset profile (voc, coco, cocostuff); "
            "to tag the single class 'vco', write '=vco'"),
    ("mynames.txt", "names file 'mynames.txt' does not exist"),
])
def test_a_mistyped_vocab_is_refused_before_the_model_loads(verb, vocab, sentence, tmp_path, capsys):
    """`--vocab vco` (and a missing names file) used to tag the single class it spells; the
    weights given do not exist, so a model loaded first would be a different error."""
    missing_weights = str(tmp_path / "missing.pt")
    code, out, err = run_in_process(*verb_args(verb, tmp_path), "--vocab", vocab,
                                    *(("--weights", missing_weights) if verb != "evaluate-masks" else ()),
                                    capsys=capsys)
    assert (code, out, err) == (2, "", f"error: {sentence}\n")


def test_a_profile_name_in_capitals_is_the_profile(tmp_path, text_cache_dir, capsys):
    scores = str(tmp_path / "scores.json")
    code, _, err = run_in_process("classify", IMAGE, "--vocab", "COCO", "--json", scores, "--weights",
                                  WEIGHTS, "--device", "cpu", "--cache-dir", text_cache_dir, capsys=capsys)
    assert code == 0, err
    with open(scores, encoding="utf-8") as f:
        assert json.load(f)["classes"] == list(COCO_CLASSES)


@pytest.mark.parametrize("verb", (*VOCAB_VERBS, "doctor"))
def test_a_wrong_flag_shows_the_verbs_usage(verb, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_in_process(*verb_args(verb, tmp_path), "--vocabulary", "voc", capsys=capsys)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(f"usage: tagclip {verb} ") and "unrecognized arguments: --vocabulary" in err
