"""Parameters: the YAML documents the code's defaults; invalid changes come back with a reason."""
from __future__ import annotations

import array
import os
import re

import pytest
import yaml
from lifecycle_msgs.srv import GetState
from rcl_interfaces.srv import GetParameters

from tagclip_ros.core.dataset_profiles import PROFILES
from tagclip_ros.node.params import PARAMETERS, overrides_from, profile_from, rejection_reason
from tagclip_ros.node.params import ACTIVATE, CONFIGURE, RUNTIME, START, start_reason, typed
from tagclip_ros.node.harness import TaggerProcess

from ..conftest import REPO, WEIGHTS
from .conftest import STARTUP_S


def test_config_file_matches_declared_defaults():
    with open(os.path.join(REPO, "config", "tagger.yaml"), encoding="utf-8") as f:
        values = yaml.safe_load(f)["/**/tagclip_tagger"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in PARAMETERS}


CURRENT = {spec.name: spec.default for spec in PARAMETERS}


def test_the_readme_table_lists_every_parameter_with_its_default_and_when_it_is_set():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        rows = {m.group(1): (m.group(2), m.group(3)) for m in
                re.finditer(r"^\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \|", f.read(), re.M)}
    when = {RUNTIME: "runtime", CONFIGURE: "configure", ACTIVATE: "activate", START: "start"}
    for spec in PARAMETERS:
        assert spec.name in rows, spec.name
        default, applies = rows[spec.name]
        assert applies.strip().startswith(when.get(spec.applies, "start")), spec.name
        if not isinstance(spec.default, list):
            shown = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
            assert default.strip() == f"`{shown or chr(39) * 2}`", spec.name


@pytest.mark.parametrize("changes, reason", [
    ({"vocabulary": []}, "empty"), ({"vocabulary": ["cat", "cat"]}, "more than once"),
    ({"vocabulary": ["cat", ""]}, "blank"), ({"background": ["sky", "sky"]}, "more than once"),
    ({"vocabulary": ["=sky"]}, "both"), ({"segmentation.method": "magic"}, "one of"),
    ({"vocabulary": ["vco"]}, "not a dataset profile.*'=vco'"),
    ({"tag_threshold": 2.0}, r"\[-1.0, 1.0\]"), ({"tag_threshold": -0.5}, "or be -1 for the profile's"),
    ({"candidate_threshold": 1.5}, r"\[-1.0, 1.0\]"), ({"affinity_blocks": -1}, r"\[0, 64\]"),
    ({"temporal.alpha": 0.0}, r"new frame's weight in \(0, 1\], not 0.0"),
    ({"temporal.reset_after": 0.0}, "positive seconds"), ({"temporal.min_frames": 0}, r"\[1, 1000\]"),
    ({"max_rate": -1.0}, r"max_rate must lie in \[0.0, 1000.0\]"),
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


def test_file_and_folder_parameters_and_cameras_and_only_they_are_read_only():
    """What names a file or folder is fixed at start, and the cameras the topics are made
    from; everything else stays settable."""
    read_only = {spec.name for spec in PARAMETERS if spec.descriptor().read_only}
    assert read_only == {"model.name", "model.pretrained", "model.weights", "text_cache_dir", "cameras"}
    for name in read_only:
        assert "read-only" in next(s for s in PARAMETERS if s.name == name).descriptor().description


STATES = ("unconfigured", "inactive", "active")


@pytest.mark.parametrize("applies, refused_in", [
    (CONFIGURE, ("inactive", "active")), (ACTIVATE, ("active",)), (START, STATES), (RUNTIME, ()),
])
def test_a_parameter_is_refused_while_the_state_that_read_it_lasts(applies, refused_in):
    """A value read at configure (activate, start) time is refused once read, with what to do,
    rather than accepted and left unused; every other state accepts it."""
    for spec in (s for s in PARAMETERS if s.applies == applies):
        for state in STATES:
            reason = rejection_reason({spec.name: spec.default}, CURRENT, state)
            assert (reason is not None) == (state in refused_in), (spec.name, state, reason)
            assert reason is None or reason.startswith(f"{spec.name} is {applies}")
    assert rejection_reason({"device": "cpu"}, CURRENT, "active") == (
        "device is read at configure time and the node is active: deactivate and clean up first, "
        "then set it and configure")
    assert "inactive: clean up first" in rejection_reason({"precision": "fp32"}, CURRENT, "inactive")
    assert "deactivate first, then set it and activate" in rejection_reason(
        {"image_qos": "reliable"}, CURRENT, "active")


def test_values_given_at_start_get_the_checks_of_a_change_without_the_states():
    assert start_reason({"max_input_side": "abc"}) == (
        "max_input_side must be a whole number, not the text 'abc'")
    assert start_reason({"vocabulary": "cat"}).startswith("vocabulary must be a list of names")
    assert "[-1.0, 1.0]" in start_reason({"tag_threshold": 2.0})
    assert start_reason({"device": "cpu", "autostart": False, "tag_threshold": 0, "weights": "x"}) is None
    assert typed("tag_threshold", 0) == 0.0 and type(typed("tag_threshold", 0)) is float


def test_camera_names_must_be_ros_names_and_distinct():
    assert start_reason({"cameras": ["front", "left", "arm/gripper"]}) is None
    assert start_reason({"cameras": ["front", "left", "front"]}) == (
        "cameras lists front more than once: each camera needs its own name")
    for bad in ("2nd", "front/", "/front", "front cam", ""):
        assert start_reason({"cameras": ["left", bad]}).startswith(f"camera name {bad!r} is not a ROS name")
    assert start_reason({"cameras": "front"}).startswith("cameras must be a list of names")
    assert typed("cameras", None) == []  # how rcl's params-file and -p parsers give `[]`
    assert start_reason({"cameras": None}) is None  # config/tagger.yaml's `cameras: []`


def test_a_wrong_type_is_refused_with_a_sentence_before_other_rules():
    assert rejection_reason({"vocabulary": "cat"}, CURRENT, "active") == (
        "vocabulary must be a list of names, e.g. [cat, dog], not the text 'cat'")
    assert rejection_reason({"max_input_side": "abc"}, CURRENT, "active").startswith(
        "max_input_side must be a whole number")
    empty = array.array("b")  # what `ros2 param set NODE vocabulary "[]"` may send
    assert rejection_reason({"vocabulary": empty}, CURRENT) == rejection_reason({"vocabulary": []}, CURRENT)
    assert rejection_reason({"background": empty}, CURRENT) is None  # `[]`: no background names


def unconfigured_tagger(tmp_path, namespace: str, params: dict) -> TaggerProcess:
    """A tagger process started with `params` over the tests' defaults, left unconfigured."""
    return TaggerProcess(namespace, str(tmp_path / "tagger.log"),
                         {"model.weights": WEIGHTS, "device": "cpu", "autostart": False, **params})


def test_unknown_names_given_at_start_are_named_with_the_closest_known_one(ros, tmp_path):
    process = unconfigured_tagger(tmp_path, "/typos", {
        "weights": WEIGHTS, "vocab": "[cat, dog]", "use_sim_time": False,
        "qos_overrides./typos/tags.publisher.depth": 5})
    try:
        # the node answers once its constructor is done: after the warnings
        ros.call(GetState, "/typos/tagclip_tagger/get_state", GetState.Request(), timeout=STARTUP_S)
        log = process.log()
        assert "unknown parameter 'weights' ignored; did you mean 'model.weights'?" in log, log
        assert "unknown parameter 'vocab' ignored; did you mean 'vocabulary'?" in log
        assert log.count("unknown parameter") == 2  # ROS-wide names are no concern of the node
    finally:
        assert process.stop() == 0, process.log()


@pytest.mark.parametrize("name, value, sentence", [
    ("vocabulary", "cat", "vocabulary must be a list of names, e.g. [cat, dog], not the text 'cat'"),
    ("tag_threshold", 2.0, "tag_threshold must lie in [-1.0, 1.0], not 2.0"),
    ("cameras", "[front, front]", "cameras lists front more than once: each camera needs its own name"),
], ids=["wrong type", "out of range", "repeated camera"])
def test_a_bad_value_given_at_start_ends_the_node_with_one_sentence(ros, tmp_path, name, value, sentence):
    """(`ros`: on the module's own DDS domain.) One sentence, status 2: never a traceback."""
    process = unconfigured_tagger(tmp_path, "/bad", {name: value})
    try:
        assert process.process.wait(STARTUP_S) == 2, process.log()
    finally:
        process.stop()
    assert process.log().splitlines() == [f"tagger_node: {sentence}"]


def test_the_params_file_reaches_a_node_in_a_namespace(ros, tmp_path):
    """config/tagger.yaml's key matches the node in any namespace (`namespace:=front`): a copy
    of it with one value changed, given to a node in /cfg, sets that value."""
    with open(os.path.join(REPO, "config", "tagger.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert "\n    tag_threshold: -1.0 " in text
    mine = tmp_path / "mine.yaml"
    mine.write_text(text.replace("\n    tag_threshold: -1.0 ", "\n    tag_threshold: 0.3 "), encoding="utf-8")
    process = TaggerProcess("/cfg", str(tmp_path / "tagger.log"), {"autostart": False},
                            ("--params-file", str(mine)))
    try:
        answer = ros.call(GetParameters, "/cfg/tagclip_tagger/get_parameters",
                          GetParameters.Request(names=["tag_threshold"]), timeout=STARTUP_S)
        assert answer.values[0].double_value == 0.3, process.log()
    finally:
        assert process.stop() == 0, process.log()
