"""What every verb does with a mistyped argument, as a user gives it (issue 19, items 1 and 11):
a --vocab that names no profile nor an existing file is refused with one sentence before the
model loads; a wrong flag gets the verb's own usage; neither, nor --help, loads torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tagclip_ros.core.vocab import COCO_CLASSES

from ..conftest import IMAGES, MODEL_LIBRARIES, REPO, WEIGHTS
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


# Run in a fresh interpreter: each argv through `tagclip`'s main, then which of them it loaded.
ANSWER_AND_LIST_LOADED = """
import contextlib, io, json, sys
from tagclip_ros.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
print(json.dumps({"codes": codes, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def test_help_and_refusals_answer_without_loading_torch(tmp_path):
    """`tagclip --help`, each verb's help, a mistyped --vocab and a wrong flag are answered
    before any model library loads, so a typo costs a fraction of a second, not 4."""
    verbs = (*VOCAB_VERBS, "doctor")
    argvs = [["--help"], *([verb, "--help"] for verb in verbs),
             *([*verb_args(verb, tmp_path), "--vocab", "vco"] for verb in VOCAB_VERBS),
             *([*verb_args(verb, tmp_path), "--vocabulary", "voc"] for verb in verbs)]
    done = subprocess.run([sys.executable, "-c", ANSWER_AND_LIST_LOADED, json.dumps(argvs),
                           json.dumps(MODEL_LIBRARIES)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["codes"] == [0] * (1 + len(verbs)) + [2] * (len(VOCAB_VERBS) + len(verbs))
    assert answer["loaded"] == []
