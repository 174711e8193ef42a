"""The node's parameters: one table of names, defaults, ranges and when each takes effect.

`config/tagger.yaml` documents the same defaults for users; `test/node/test_params.py` checks
the two agree.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..core.depth import DEFAULT_MAX_DELAY, DEFAULT_MIN_POINTS
from ..core.detections import DEFAULT_MIN_AREA
from ..core.image import DEFAULT_MAX_INPUT_SIDE
from ..core.settings import PRECISION_NAMES
from ..core.temporal import ENABLED_HELP, SETTING_HELP, TemporalSettings
from ..core.dataset_profiles import (BUILTIN, PROFILE_ESCAPE, PROFILES, DatasetProfile, affinity_start,
                                     select_profile)
from .param_checks import normalized, type_reason

RUNTIME = "changeable at runtime"
CONFIGURE = "read at configure time"
ACTIVATE = "read at activate time"
START = "read at start"  # by the node's constructor: a later change would be kept but never used
# Parameters naming a file or folder the node reads or writes: nothing on the ROS graph may point
# the node at another file, so rclpy refuses remote changes ("Trying to set a read-only
# parameter"); a value can still be given at start (command line, params file, launch).
FIXED = "fixed at start: read-only, as it names a file or folder the node reads or writes"
# Parameters fixed for the node's life because the topics are made from them.
CAMERAS_FIXED = "fixed at start: read-only, as each camera's topics are made from it"
PROFILE_DEFAULT = -1.0  # a threshold parameter's value that takes the profile's
TEMPORAL = "temporal."  # the stable-tags parameters' prefix: a change of any starts them over
# A camera name: one or more ROS name tokens joined by "/" ("front", "arm/gripper").
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")
# Parameters whose change re-applies the profile with its overrides (`overrides_from`).
PROFILE_PARAMETERS = frozenset({"vocabulary", "background", "tag_threshold", "candidate_threshold",
                                "affinity_blocks", "segmentation.background_power"})


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default, when it takes effect, and what values are allowed."""

    name: str
    default: Any
    description: str
    applies: str = RUNTIME
    value_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    def descriptor(self) -> ParameterDescriptor:
        text = f"{self.description} ({self.applies})"
        if self.choices:
            text += f"; one of {', '.join(self.choices)}"
        # Typed by `rejection_reason`, not by rclpy, whose refusal names type numbers only.
        descriptor = ParameterDescriptor(name=self.name, description=text,
                                         read_only=self.read_only, dynamic_typing=True)
        if self.read_only:
            descriptor.additional_constraints = ("read-only: set it when starting the node "
                                                 "(-p, a params file or the launch file)")
        if self.value_range and isinstance(self.default, int):
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.value_range[0]), to_value=int(self.value_range[1]), step=1)]
        elif self.value_range:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=self.value_range[0], to_value=self.value_range[1], step=0.0)]
        return descriptor

    @property
    def read_only(self) -> bool:
        """Whether remote `set_parameters` calls are refused (by rclpy, with a reason)."""
        return self.applies in (FIXED, CAMERAS_FIXED)


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("vocabulary", list(BUILTIN["voc"].classes), "class names to tag (id i+1 in masks), "
              f"or one dataset profile's name ({', '.join(PROFILES)}, any case) selecting its "
              f"classes, background and settings; one class is written ['{PROFILE_ESCAPE}name'] "
              "(a single bare name must be a profile's)"),
    ParamSpec("background", list(BUILTIN["voc"].background),
              "names scored beside the vocabulary but never reported (a profile brings its own)"),
    ParamSpec("tag_threshold", PROFILE_DEFAULT, "relative threshold between an image's lowest and "
              "highest class score above which a class is a tag; -1: the profile's (0.5; "
              "cocostuff 0.1)", value_range=(-1.0, 1.0)),
    ParamSpec("candidate_threshold", PROFILE_DEFAULT, "relative threshold for CWR's candidate "
              "classes; -1: the profile's (0.5; cocostuff 0.1)", value_range=(-1.0, 1.0)),
    ParamSpec("affinity_blocks", 0, "DMAR's affinity averages this many blocks before the last; "
              "0: the profile's (3; cocostuff all)", value_range=(0, 64)),
    ParamSpec("temporal.enabled", False, ENABLED_HELP),
    ParamSpec("temporal.alpha", TemporalSettings.alpha, SETTING_HELP["alpha"], value_range=(0.0, 1.0)),
    ParamSpec("temporal.min_frames", TemporalSettings.min_frames, SETTING_HELP["min_frames"],
              value_range=(1, 1000)),
    ParamSpec("temporal.release", TemporalSettings.release, SETTING_HELP["release"],
              value_range=(0.0, 1.0)),
    ParamSpec("temporal.reset_after", TemporalSettings.reset_after, SETTING_HELP["reset_after"],
              value_range=(0.0, 86400.0)),
    ParamSpec("max_rate", 0.0, "most frames per second processed (on average; per camera); faster "
              "ones are dropped before any work; 0: no limit", value_range=(0.0, 1000.0)),
    ParamSpec("segmentation.enabled", True, "publish label_mask (and a tinted overlay)"),
    ParamSpec("segmentation.method", "clipes", "clipes: CLIP-ES Grad-CAM masks (the paper's); "
              "dmar: gradient-free masks from TagCLIP's refined map (faster, coarser)",
              choices=("clipes", "dmar")),
    ParamSpec("segmentation.background_power", 1.0, "exponent of the background score "
              "(1 - max CAM)^p; larger gives more foreground", value_range=(0.01, 10.0)),
    ParamSpec("detections.min_area", DEFAULT_MIN_AREA, "least area of a detections region, as a "
              "fraction of the image's pixels", value_range=(0.0, 1.0)),
    ParamSpec("depth.enabled", False, "subscribe depth (aligned to the image) and camera_info "
              "and publish detections_3d", ACTIVATE),
    ParamSpec("depth.min_points", DEFAULT_MIN_POINTS, "least valid depth pixels of a region for "
              "its 3D box", value_range=(1, 10_000_000)),
    ParamSpec("depth.max_delay", DEFAULT_MAX_DELAY, "seconds between a frame's stamp and its depth image's "
              "at most", ACTIVATE, value_range=(0.0, 10.0)),
    ParamSpec("model.name", "ViT-B-16", "open_clip architecture", FIXED),
    ParamSpec("model.pretrained", "openai", "open_clip pretrained tag, downloaded on first use",
              FIXED),
    ParamSpec("model.weights", "", "local checkpoint file (OpenAI .pt or open_clip); "
              "overrides model.pretrained; unset: $TAGCLIP_WEIGHTS", FIXED),
    ParamSpec("device", "auto", "auto, cpu, cuda or cuda:N", CONFIGURE),
    ParamSpec("compile", False, "compile the fixed-shape passes with torch.compile (CUDA graphs "
              "on a GPU); each new frame size compiles first", CONFIGURE),
    ParamSpec("max_input_side", DEFAULT_MAX_INPUT_SIDE, "frames whose longer side exceeds this "
              "many pixels are downscaled for the model (label masks keep the frame's size); "
              "bounds memory per frame; 0: native size", CONFIGURE, value_range=(0, 16384)),
    ParamSpec("precision", "fp32", "numeric precision: fp32; bf16 (CPU or CUDA); fp16 (CUDA)",
              CONFIGURE, choices=PRECISION_NAMES),
    ParamSpec("text_cache_dir", "", "text-feature cache folder ('' = ~/.cache/tagclip_ros/text)",
              FIXED),
    ParamSpec("cameras", [], "cameras served by this one node and model, each under its own "
              "topics (front/image → front/tags, ...), taken in turn; empty: one camera, on "
              "image", CAMERAS_FIXED),
    ParamSpec("batching", "auto", "frames of equal size from several cameras go through the "
              "model together: on, off, or auto (on CUDA only: on the CPU it is not faster)",
              choices=("auto", "on", "off")),
    ParamSpec("image_transport", "raw", "subscribe to image (raw) or image/compressed",
              ACTIVATE, choices=("raw", "compressed")),
    ParamSpec("image_qos", "sensor_data", "image subscription QoS: sensor_data (best effort) "
              "or reliable", ACTIVATE, choices=("sensor_data", "reliable")),
    ParamSpec("autostart", True, "configure and activate on start, so a launch file just works",
              START),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", START,
              value_range=(0.1, 60.0)),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in PARAMETERS}


def typed(name: str, value: Any) -> Any:
    """A parameter's accepted value as its default's type (a float for a whole number given to
    a float parameter, a list for an array); a name that is not the node's is left as it is."""
    spec = SPECS.get(name)
    return value if spec is None else normalized(value, spec.default)


def profile_from(values: Mapping[str, Any]) -> DatasetProfile:
    """The profile the `vocabulary` and `background` values select (ValueError if bad)."""
    return select_profile(list(values["vocabulary"]), list(values["background"]))


def overrides_from(values: Mapping[str, Any]) -> tuple[dict, dict]:
    """TagCLIP's and CLIP-ES's settings the parameters give over the profile's (None: the
    profile's), for `Perception.for_profile` / `set_profile`."""
    max_side = values["max_input_side"] or None
    tag = {"tag_threshold": threshold(values["tag_threshold"]),
           "candidate_threshold": threshold(values["candidate_threshold"]),
           "affinity_start": affinity_start(values["affinity_blocks"]) if values["affinity_blocks"] else None,
           "max_input_side": max_side}
    return tag, {"background_power": values["segmentation.background_power"], "max_input_side": max_side}


def temporal_from(values: Mapping[str, Any]) -> TemporalSettings:
    """The stable-tags settings the `temporal.*` values give (ValueError if bad); used while
    `temporal.enabled` is on."""
    return TemporalSettings(alpha=values["temporal.alpha"], min_frames=values["temporal.min_frames"],
                            release=values["temporal.release"], reset_after=values["temporal.reset_after"])


def threshold(value: float) -> float | None:
    """A threshold parameter's value, None for PROFILE_DEFAULT (the profile's)."""
    return None if value == PROFILE_DEFAULT else value


def rejection_reason(changes: Mapping[str, Any], current: Mapping[str, Any],
                     state: str | None = None) -> str | None:
    """Why a set of parameter changes is refused, or None to accept it. `state` is the node's
    lifecycle state (unconfigured, inactive, active), None for the values given at start."""
    for name, value in changes.items():
        spec = SPECS.get(name)
        if spec is None:
            continue
        reason = type_reason(name, value, spec.default) or (state and timing_reason(spec, state))
        if reason:
            return reason
        if spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}, not {value!r}"
        if spec.value_range and not spec.value_range[0] <= value <= spec.value_range[1]:
            return f"{name} must lie in [{spec.value_range[0]}, {spec.value_range[1]}], not {value}"
        if name in ("tag_threshold", "candidate_threshold") and value != PROFILE_DEFAULT \
                and not 0.0 <= value <= 1.0:
            return f"{name} must lie in [0.0, 1.0], or be -1 for the profile's, not {value}"
    if "vocabulary" in changes or "background" in changes:
        try:
            profile_from({**current, **changes})
        except ValueError as exc:
            return str(exc)
    if "cameras" in changes:
        reason = cameras_reason(typed("cameras", changes["cameras"]))  # `[]` may come as None
        if reason:
            return reason
    if any(name.startswith(TEMPORAL) for name in changes):
        try:
            temporal_from({**current, **changes})
        except ValueError as exc:
            return str(exc)
    return None


def timing_reason(spec: ParamSpec, state: str) -> str | None:
    """Why `spec`'s parameter cannot change in lifecycle `state`, or None: a value read at
    configure time only while unconfigured, one read at activate time only while not active,
    one read at start never (otherwise the node would report a value it does not use)."""
    if spec.applies == START:
        return f"{spec.name} is read at start only: give it with -p, in the params file or the launch file"
    if spec.applies == CONFIGURE and state != "unconfigured":
        steps = "deactivate and clean up" if state == "active" else "clean up"
        return (f"{spec.name} is read at configure time and the node is {state}: {steps} first, "
                "then set it and configure")
    if spec.applies == ACTIVATE and state == "active":
        return (f"{spec.name} is read at activate time and the node is active: deactivate first, "
                "then set it and activate")
    return None


def cameras_reason(cameras: Sequence[str]) -> str | None:
    """Why `cameras` cannot name the node's streams, or None."""
    for name in cameras:
        if not CAMERA_NAME.fullmatch(name):
            return (f"camera name {name!r} is not a ROS name: letters, digits and _ (starting with "
                    "a letter), parts joined by /, e.g. [front, left, arm/gripper]")
    repeated = sorted({name for name in cameras if list(cameras).count(name) > 1})
    if repeated:
        return f"cameras lists {', '.join(repeated)} more than once: each camera needs its own name"
    return None


def start_reason(given: Mapping[str, Any]) -> str | None:
    """Why the values the node was started with (-p, params file) cannot be used, or None: the
    checks of a runtime change, against the defaults. Other names are not the node's concern."""
    return rejection_reason({name: value for name, value in given.items() if name in SPECS}, DEFAULTS)
