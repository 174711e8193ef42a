"""Parameters: the YAML documents the code's defaults; invalid changes come back with a reason."""
from __future__ import annotations

import os
import re

import pytest
import yaml

from tagclip_ros.core.dataset_profiles import PROFILES
from tagclip_ros.node.params import PARAMETERS, overrides_from, profile_from, rejection_reason

from ..conftest import REPO


def test_config_file_matches_declared_defaults():
    with open(os.path.join(REPO, "config", "tagger.yaml"), encoding="utf-8") as f:
        values = yaml.safe_load(f)["tagclip_tagger"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in PARAMETERS}


CURRENT = {spec.name: spec.default for spec in PARAMETERS}


@pytest.mark.parametrize("changes, reason", [
    ({"vocabulary": []}, "empty"), ({"vocabulary": ["cat", "cat"]}, "more than once"),
    ({"vocabulary": ["cat", ""]}, "blank"), ({"background": ["sky", "sky"]}, "more than once"),
    ({"vocabulary": ["=sky"]}, "both"), ({"segmentation.method": "magic"}, "one of"),
    ({"vocabulary": ["vco"]}, "not a dataset profile.*'=vco'"),
    ({"tag_threshold": 2.0}, r"\[-1.0, 1.0\]"), ({"tag_threshold": -0.5}, "or be -1 for the profile's"),
    ({"candidate_threshold": 1.5}, r"\[-1.0, 1.0\]"), ({"affinity_blocks": -1}, r"\[0, 64\]"),
])
def test_invalid_changes_are_rejected_with_a_reason(changes, reason):
    assert re.search(reason, rejection_reason(changes, CURRENT) or "")


def test_valid_changes_pass_and_keep_prompt_names():
    assert rejection_reason({"vocabulary": ["robot", "person"], "tag_threshold": 0.3}, CURRENT) is None
    vocab = profile_from({**CURRENT, "vocabulary": ["robot", "person"]}).vocabulary
    assert vocab.prompt_name("person") == "person with clothes,people,human"


def test_a_profile_name_selects_the_whole_profile_and_the_escape_a_single_class():
    stuff = profile_from({**CURRENT, "vocabulary": ["cocostuff"]})  # background: still VOC's list
    assert stuff is PROFILES["cocostuff"] and stuff.vocabulary.background == ()
    single = profile_from({**CURRENT, "vocabulary": ["=coco"]})
    assert single.name == "custom" and single.vocabulary.classes == ("coco",)
    assert rejection_reason({"vocabulary": ["cocostuff"]}, CURRENT) is None


def test_defaults_take_the_profiles_settings_and_values_override_them():
    tag, segmentation = overrides_from(CURRENT)
    assert tag["tag_threshold"] is None and tag["candidate_threshold"] is None
    assert tag["affinity_start"] is None and segmentation["background_power"] == 1.0
    tag, _ = overrides_from({**CURRENT, "tag_threshold": 0.3, "affinity_blocks": 5})
    assert PROFILES["cocostuff"].tag_settings(**tag).tag_threshold == 0.3
    assert PROFILES["cocostuff"].tag_settings(**tag).affinity_start == -6


def test_file_and_folder_parameters_and_only_they_are_read_only():
    """What names a file or folder is fixed at start; everything else stays settable."""
    read_only = {spec.name for spec in PARAMETERS if spec.descriptor().read_only}
    assert read_only == {"model.name", "model.pretrained", "model.weights", "text_cache_dir"}
    for name in read_only:
        assert "read-only" in next(s for s in PARAMETERS if s.name == name).descriptor().description
