"""Vocabulary parsing and validation: the paper's lists and clear reasons for bad input."""
from __future__ import annotations

import pytest

from tagclip_ros.core import BUILTIN, Vocabulary, load_vocabulary


def test_builtin_vocabularies_carry_the_papers_lists():
    assert len(BUILTIN["voc"].classes) == 20 and len(BUILTIN["voc"].background) == 25
    assert len(BUILTIN["coco"].classes) == 80 and len(BUILTIN["coco"].background) == 23
    assert {"keyboard", "sign"} - set(BUILTIN["coco"].background) == {"keyboard", "sign"}
    assert BUILTIN["voc"].prompt_name("person") == "person with clothes,people,human"


@pytest.mark.parametrize("names, reason", [
    ((), "empty"), (("cat", "cat"), "more than once"), (("cat", " "), "blank"),
    (("cat", " dog"), "spaces"), (("x" * 300,), "longer than"),
])
def test_bad_vocabularies_are_rejected_with_a_reason(names, reason):
    with pytest.raises(ValueError, match=reason):
        Vocabulary(names)


def test_class_and_background_may_not_overlap():
    with pytest.raises(ValueError, match="both"):
        Vocabulary(("sky", "cat"), ("sky",))


def test_comma_list_file_and_background_override(tmp_path):
    assert load_vocabulary("cat, dog").classes == ("cat", "dog")
    names = tmp_path / "names.txt"
    names.write_text("# robots\nrobot\n\nforklift\n")
    vocab = load_vocabulary(str(names), "coco")
    assert vocab.classes == ("robot", "forklift") and len(vocab.background) == 23
    assert load_vocabulary("voc", "").background == ()
    with pytest.raises(ValueError, match="blank"):
        load_vocabulary("cat,,dog")
