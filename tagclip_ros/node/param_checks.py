"""Checks of parameter names and value types, shared by `tagger_node` and `image_source`.

ROS-free (no rclpy), so that the rules are testable without a node: a name given at start that
no parameter has is named with the closest known one, and a value of the wrong type gets a
sentence saying what the parameter takes (rclpy's own check answers with type numbers).
"""
from __future__ import annotations

import array
import difflib
from collections.abc import Collection, Iterable
from typing import Any

# Parameters rclpy gives every node, whatever it declares: never reported as unknown.
ROS_WIDE = frozenset({"use_sim_time", "start_type_description_service"})
ROS_WIDE_PREFIXES = ("qos_overrides.",)
SIMILAR = 0.6  # difflib's ratio from which a known name is suggested for an unknown one
LISTS = (list, tuple, array.array)  # how rclpy hands array values over


class ParameterError(ValueError):
    """A value given at start that the node cannot run with; the message is one sentence."""


def given_at_start(node: Any) -> dict[str, Any]:
    """The values an rclpy node was started with (-p, params files, `parameter_overrides`),
    by name, less those rclpy declared itself (use_sim_time). rclpy keeps them in an attribute
    it offers no public accessor for, the same from Humble to Kilted."""
    overrides = getattr(node, "_parameter_overrides", {})
    return {name: p.value for name, p in overrides.items() if not node.has_parameter(name)}


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name that `name` most likely mistypes, or None if none is close. Each known
    name is compared whole and by its last dotted part (`weights` is `model.weights`'s),
    ignoring case."""
    def similarity(candidate: str) -> float:
        return max(_ratio(name, candidate), _ratio(name, candidate.rsplit(".", 1)[-1]))
    best = max(known, key=similarity, default=None)
    return best if best is not None and similarity(best) >= SIMILAR else None


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def unknown_parameter_warnings(given: Iterable[str], known: Collection[str]) -> list[str]:
    """One sentence per name in `given` (the values a node was started with) that is none of
    its `known` parameters nor a ROS-wide one: such a value is silently ignored by rclpy."""
    warnings = []
    for name in given:
        if name in known or name in ROS_WIDE or name.startswith(ROS_WIDE_PREFIXES):
            continue
        suggestion = closest_name(name, known)
        hint = (f"did you mean '{suggestion}'?" if suggestion
                else f"this node's parameters are {', '.join(sorted(known))}")
        warnings.append(f"unknown parameter '{name}' ignored; {hint}")
    return warnings


def type_reason(name: str, value: Any, default: Any) -> str | None:
    """Why `value` cannot be the value of parameter `name`, whose type is its `default`'s
    (a whole number is also a number), or None if it can."""
    if _fits(value, default):
        return None
    return f"{name} must be {_expected(default)}, not {_shown(value)}"


def normalized(value: Any, default: Any) -> Any:
    """A value that passed `type_reason` as the default's Python type: a float for a whole
    number given to a float parameter, a list for any array (an empty array of any type, or
    no value: rcl's params-file parser gives `[]` as that)."""
    if isinstance(default, float) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list):
        return [] if value is None else list(value)
    return value


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):  # an empty array, of whatever type, is an empty list
        return value is None or (isinstance(value, LISTS) and all(isinstance(v, str) for v in value))
    return type(value) is type(default)


def _expected(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, list):
        return "a list of names, e.g. [cat, dog]"
    return "text"


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, LISTS):
        return f"the list {list(value)}"
    return repr(value)
