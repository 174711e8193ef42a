"""Dataset profiles: everything that differs between the paper's three benchmarks, in one place.

TagCLIP reports PASCAL VOC, COCO-Object and COCO-Stuff-27, and the official code runs COCO-Stuff
in a mode of its own. A `DatasetProfile` bundles what a benchmark sets:

- what TagCLIP scores: the class names and the background names scored beside them;
- TagCLIP's settings for it: CWR candidate and tag thresholds, and which blocks' attention
  DMAR's affinity averages;
- CLIP-ES's settings for it (its generate_cams_<dataset>.py differ): the background texts,
  which blocks' attention refines the CAMs and the CAM level whose boxes bound it, and whether
  a background channel (1 − max CAM)^p competes with the tags or every pixel takes its best tag;
- how ground truth is read for evaluation: the ids of tag ground truth (COCO-Stuff's 182-ids
  map to its 171 classes) and the class sets masks are scored in (COCO-Stuff: 171 fine and the
  paper's 27 coarse classes).

`voc`, `coco` and `cocostuff` are built in (named in any case); any other vocabulary (a names
file, "a,b,c", or "=name" for one class) gets a custom profile with the VOC/COCO settings. The
CLI, the node, bags, `Perception` and the benchmarks all resolve vocabularies here.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import cocostuff
from .settings import SegmentationSettings, TagClipSettings
from .vocab import (COCO_BACKGROUND, COCO_CLASSES, COCO_SEGMENTATION_NAMES, VOC_BACKGROUND,
                    VOC_CLASSES, VOC_SEGMENTATION_NAMES, Vocabulary, parse_names)

MASK_IGNORE = 255  # ground-truth (and unmapped) pixels left out of the mIoU
# The TagCLIP settings a profile sets (a custom profile: the VOC/COCO values, TagClipSettings').
PROFILE_TAG_FIELDS = ("tag_threshold", "candidate_threshold", "affinity_start")
# CLIP-ES's generate_cams_coco.py and _cocostuff.py, unlike _voc.py: the affinity averages the
# last 8 blocks' attention, the last included, and CAM boxes at 0.7 of the maximum bound it.
CLIPES_COCO = {"affinity_last_block": True, "box_threshold": 0.7}


@dataclass(frozen=True)
class MaskEvaluation:
    """One class set label masks are scored in: its names (confusion-matrix rows), and lookups
    (256 entries, MASK_IGNORE for pixels left out) taking a ground-truth PNG value and a mask
    value (class index + 1, 0 background) to a row; None keeps the values as they are."""

    title: str
    names: tuple[str, ...]
    gt_lookup: np.ndarray | None = None
    mask_lookup: np.ndarray | None = None

    def ground_truth(self, gt: np.ndarray) -> np.ndarray:
        return gt if self.gt_lookup is None else self.gt_lookup[np.clip(gt, 0, 255)]

    def prediction(self, mask: np.ndarray) -> np.ndarray:
        return mask if self.mask_lookup is None else self.mask_lookup[np.clip(mask, 0, 255)]


@dataclass(frozen=True)
class DatasetProfile:
    """A benchmark's vocabulary, TagCLIP and CLIP-ES settings and evaluation (module docstring)."""

    name: str
    vocabulary: Vocabulary
    tagclip: Mapping[str, Any] = field(default_factory=dict)  # TagClipSettings fields it sets
    clipes: Mapping[str, Any] = field(default_factory=dict)  # SegmentationSettings fields it sets
    gt_tag_ids: int | None = None  # ids in tag ground truth when not the class indices
    gt_tags_to_classes: Callable[[Sequence[int]], list[int]] | None = None
    mask_evaluations: tuple[MaskEvaluation, ...] = ()

    def tag_settings(self, **overrides) -> TagClipSettings:
        """TagCLIP's settings for this profile; `overrides` are TagClipSettings fields, where
        None keeps the profile's value of a field it sets (the thresholds, the affinity)."""
        return TagClipSettings(**_merged(self.tagclip, overrides, PROFILE_TAG_FIELDS))

    def segmentation_settings(self, **overrides) -> SegmentationSettings:
        """CLIP-ES's settings for this profile; `overrides` are SegmentationSettings fields,
        where None keeps the profile's value of a field it sets."""
        return SegmentationSettings(**_merged(self.clipes, overrides, self.clipes.keys()))

    @property
    def background_channel(self) -> bool:
        """Whether its label masks have a background (COCO-Stuff's have none)."""
        return self.segmentation_settings().background_channel

    def evaluations(self) -> tuple[MaskEvaluation, ...]:
        """The class sets masks are scored in: the profile's, else background + its classes."""
        return self.mask_evaluations or (
            MaskEvaluation("classes", ("background", *self.vocabulary.classes)),)

    def tag_ground_truth(self, ids: Sequence[int]) -> list[int]:
        """Class indices of a ground-truth tag line's ids."""
        return list(ids) if self.gt_tags_to_classes is None else self.gt_tags_to_classes(ids)

    def with_vocabulary(self, vocabulary: Vocabulary) -> DatasetProfile:
        return dataclasses.replace(self, vocabulary=vocabulary)


def _merged(own: Mapping[str, Any], overrides: Mapping[str, Any], profile_fields) -> dict:
    """`own` updated by `overrides`, but for None overrides of the profile's fields."""
    return {**own, **{k: v for k, v in overrides.items() if v is not None or k not in profile_fields}}


def affinity_start(blocks: int) -> int:
    """The `affinity_start` that averages the `blocks` blocks before the last one."""
    if blocks < 1:
        raise ValueError(f"affinity blocks must be at least 1, not {blocks}")
    return -(blocks + 1)


def _cocostuff_evaluations() -> tuple[MaskEvaluation, ...]:
    """COCO-Stuff masks scored in its 171 classes and the paper's 27 coarse ones. Ground truth
    holds 0-based 182-ids (255 unlabelled); masks hold the 171-class index + 1 and no
    background, so a 0 in a mask is not a class and is refused as out of range."""
    fine = np.full(256, MASK_IGNORE, dtype=np.int64)
    fine[1:172] = np.arange(171)
    coarse = np.full(256, MASK_IGNORE, dtype=np.int64)
    coarse[1:172] = cocostuff.FINE171_TO_COARSE[:171]
    return (MaskEvaluation("171 COCO-Stuff classes", cocostuff.COCO_STUFF_CLASSES,
                           cocostuff.GT182_TO_171.astype(np.int64), fine),
            MaskEvaluation("27 coarse classes (COCO-Stuff-27, the paper's)", cocostuff.COARSE_CLASSES,
                           cocostuff.GT182_TO_COARSE.astype(np.int64), coarse))


PROFILES: dict[str, DatasetProfile] = {
    "voc": DatasetProfile("voc", Vocabulary(VOC_CLASSES, VOC_BACKGROUND, dict(VOC_SEGMENTATION_NAMES))),
    "coco": DatasetProfile("coco", Vocabulary(COCO_CLASSES, COCO_BACKGROUND, dict(COCO_SEGMENTATION_NAMES)),
                           clipes=CLIPES_COCO),
    # The official `--dataset cocostuff` mode: no background names for TagCLIP, DMAR's affinity
    # over every block but the last, thresholds 0.1; CLIP-ES as for COCO, prompting its
    # COCO-Stuff names (13 richer than TagCLIP's) beside the one background text "background",
    # and masks without a background channel.
    "cocostuff": DatasetProfile(
        "cocostuff", Vocabulary(cocostuff.COCO_STUFF_CLASSES, (), dict(cocostuff.CLIPES_PROMPT_NAMES)),
        tagclip={"tag_threshold": 0.1, "candidate_threshold": 0.1, "affinity_start": 0},
        clipes={**CLIPES_COCO, "background": ("background",), "background_channel": False},
        gt_tag_ids=182, gt_tags_to_classes=cocostuff.gt_ids_to_171,
        mask_evaluations=_cocostuff_evaluations()),
}
BUILTIN: dict[str, Vocabulary] = {name: p.vocabulary for name, p in PROFILES.items()}
CUSTOM = "custom"
PROFILE_ESCAPE = "="  # ["=voc"], --vocab =voc: the single class "voc", not the VOC profile


def profile_named(name: str) -> DatasetProfile | None:
    """The built-in profile `name` names, in any case (`COCO` is coco), or None."""
    return PROFILES.get(name.lower())


def profile_or_classes(names: Sequence[str]) -> DatasetProfile | tuple[str, ...]:
    """How a vocabulary given as names reads: the one rule for the node's `vocabulary`,
    --vocab (split at commas) and the query service. A single name is a profile's, in any case,
    or, after PROFILE_ESCAPE (`=coco`), the one class it names; a single bare word that is
    neither is refused (ValueError, one sentence), as it is far likelier a mistyped profile
    (`vco`) than a one-class vocabulary. Several names are the classes."""
    if len(names) != 1:
        return tuple(names)
    name = names[0]
    if name.startswith(PROFILE_ESCAPE):
        return (name[len(PROFILE_ESCAPE):],)
    profile = profile_named(name)
    if profile is None:
        raise ValueError(f"vocabulary {name!r} is not a dataset profile ({', '.join(PROFILES)}); "
                         f"to tag the single class {name!r}, write {PROFILE_ESCAPE + name!r}")
    return profile


def resolve_profile(spec: str, background: str | None = None) -> DatasetProfile:
    """The profile --vocab `spec` gives: a profile's name or "=name" (`profile_or_classes`),
    a names file or "a,b,c" (a custom profile with the VOC/COCO settings; a file that does not
    exist is an error). `background` replaces the background names the same way (a profile's
    name, a file, "a,b"; an empty string means none)."""
    escaped = spec.startswith(PROFILE_ESCAPE)
    if not escaped and os.path.isfile(spec):
        found = parse_names(spec)  # a file's names are classes, a single one too
    else:
        found = profile_or_classes((spec,) if escaped else parse_names(spec))
    profile = found if isinstance(found, DatasetProfile) else DatasetProfile(CUSTOM, Vocabulary(found))
    if background is None:
        return profile
    named = profile_named(background)
    if named is not None:
        names = named.vocabulary.background
    else:
        names = parse_names(background) if background.strip() else ()
    vocabulary = profile.vocabulary
    return profile.with_vocabulary(Vocabulary(vocabulary.classes, names, vocabulary.segmentation_names))


def select_profile(names: Sequence[str], background: Sequence[str]) -> DatasetProfile:
    """The profile a list of class names and background names selects, as the node's
    `vocabulary` and `background` parameters give them (`profile_or_classes`): a profile
    selected whole, its background names included, or a custom profile over the classes and
    background names (VOC classes keep CLIP-ES's richer prompts)."""
    found = profile_or_classes(names)
    if isinstance(found, DatasetProfile):
        return found
    prompts = {c: VOC_SEGMENTATION_NAMES[c] for c in found if c in VOC_SEGMENTATION_NAMES}
    return DatasetProfile(CUSTOM, Vocabulary(found, tuple(background), prompts))


def load_vocabulary(spec: str, background: str | None = None) -> Vocabulary:
    """The vocabulary of `resolve_profile(spec, background)`."""
    return resolve_profile(spec, background).vocabulary
