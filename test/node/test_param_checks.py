"""Parameter names and types, without a node: a mistyped name is named with the closest known
one, a value of the wrong type gets a sentence saying what the parameter takes."""
from __future__ import annotations

import array

import pytest

from tagclip_ros.node.image_source import PARAMETERS as SOURCE_PARAMETERS
from tagclip_ros.node.param_checks import closest_name, normalized, type_reason, unknown_parameter_warnings
from tagclip_ros.node.params import SPECS


@pytest.mark.parametrize("given, known, closest", [
    ("weights", SPECS, "model.weights"), ("vocab", SPECS, "vocabulary"), ("Vocabulary", SPECS, "vocabulary"),
    ("method", SPECS, "segmentation.method"), ("threshold", SPECS, "tag_threshold"),
    ("max_side", SPECS, "max_input_side"), ("src", SOURCE_PARAMETERS, "source"),
    ("fps", SOURCE_PARAMETERS, None), ("xyz", SPECS, None),
])
def test_closest_name(given, known, closest):
    assert closest_name(given, known) == closest


def test_unknown_names_are_warned_once_each_and_ros_wide_ones_never():
    given = ["weights", "vocabulary", "xyz", "use_sim_time", "qos_overrides./tags.publisher.depth",
             "start_type_description_service"]
    assert unknown_parameter_warnings(given, SPECS) == [
        "unknown parameter 'weights' ignored; did you mean 'model.weights'?",
        f"unknown parameter 'xyz' ignored; this node's parameters are {', '.join(sorted(SPECS))}"]


@pytest.mark.parametrize("value, default, reason", [
    ("cat", ["a"], "x must be a list of names, e.g. [cat, dog], not the text 'cat'"),
    ([1, 2], ["a"], "x must be a list of names, e.g. [cat, dog], not the list [1, 2]"),
    (1.5, 1280, "x must be a whole number, not the number 1.5"),
    (True, 1280, "x must be a whole number, not true"),
    ("yes", True, "x must be true or false, not the text 'yes'"),
    (0, True, "x must be true or false, not the number 0"),
    ("0.5", -1.0, "x must be a number, not the text '0.5'"),
    (False, -1.0, "x must be a number, not false"),
    (0, "auto", "x must be text, not the number 0"),
    (None, "auto", "x must be text, not unset"),
])
def test_a_wrong_type_gets_a_sentence(value, default, reason):
    assert type_reason("x", value, default) == reason


@pytest.mark.parametrize("value, default, typed", [
    (["a"], ["b"], ["a"]), ([], ["b"], []), (array.array("q"), ["b"], []),  # `[]`: an empty array of any type
    (0, -1.0, 0.0), (2.5, -1.0, 2.5), (7, 1280, 7), (False, True, False), ("cpu", "auto", "cpu"),
])
def test_values_of_the_right_type_are_accepted_as_the_defaults_type(value, default, typed):
    assert type_reason("x", value, default) is None
    result = normalized(value, default)
    assert result == typed and type(result) is type(default)
