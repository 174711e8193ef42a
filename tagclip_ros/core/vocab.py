"""Vocabularies: class names, the background names scored beside them, and their validation.

A `Vocabulary` is what TagCLIP scores: foreground names (reported, in order; class id i + 1 in
label masks) and background names (scored so that "sky" or "wall" can win a patch, never
reported). The VOC and COCO name lists below are the paper's; core/dataset_profiles.py bundles
them, with COCO-Stuff's, into the dataset profiles that `load_vocabulary` resolves.
"""
from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from typing import Any, TypeVar

S = TypeVar("S", bound="VocabularyStage")

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa", "pottedplant",
    "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)

VOC_BACKGROUND: tuple[str, ...] = (
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road",
    "rock", "street", "valley", "bridge", "sign",
)

COCO_BACKGROUND: tuple[str, ...] = tuple(n for n in VOC_BACKGROUND if n not in ("keyboard", "sign"))

# CLIP-ES prompts some VOC classes under richer names; the published label stays the class name.
VOC_SEGMENTATION_NAMES: dict[str, str] = {
    "bird": "bird avian",
    "chair": "chair seat",
    "person": "person with clothes,people,human",
    "tvmonitor": "tvmonitor screen",
}

# CLIP-ES's prompt names for COCO (its new_class_names_coco). "sknowboard" is the official
# spelling: kept so that the text features, and so the masks, equal the official ones.
COCO_SEGMENTATION_NAMES: dict[str, str] = {
    "person": "person with clothes,people,human",
    "bird": "bird avian",
    "backpack": "backpack,bag",
    "umbrella": "umbrella,parasol",
    "handbag": "handbag,purse",
    "tie": "necktie",
    "snowboard": "sknowboard",
    "baseball glove": "glove",
    "spoon": "dessertspoon",
    "chair": "chair seat",
    "tvmonitor": "tvmonitor screen",
    "remote": "remote control",
    "hair drier": "hairdrier,blowdrier",
}

MAX_NAME_LENGTH = 200
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Vocabulary:
    """Foreground classes (reported) and background names (scored, never reported)."""

    classes: tuple[str, ...]
    background: tuple[str, ...] = ()
    segmentation_names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_names(self.classes, "vocabulary")
        validate_names(self.background, "background", allow_empty=True)
        clash = set(self.classes) & set(self.background)
        if clash:
            raise ValueError(
                f"names appear both as classes and as background: {sorted(clash)}")

    @property
    def all_names(self) -> tuple[str, ...]:
        """Foreground then background: the column order of every score matrix."""
        return self.classes + self.background

    def prompt_name(self, label: str) -> str:
        """The name CLIP-ES puts into its prompt for `label` (often `label` itself)."""
        return self.segmentation_names.get(label, label)


def validate_names(names: tuple[str, ...] | list[str], what: str,
                   allow_empty: bool = False) -> None:
    """Raise ValueError with a one-sentence reason if `names` is not a usable name list."""
    if not names and not allow_empty:
        raise ValueError(f"{what} is empty; give at least one class name")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{what} has {len(names)} names; at most {MAX_CLASSES} are allowed")
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what} contains a blank name")
        if name != name.strip():
            raise ValueError(f"{what} name {name!r} has leading or trailing spaces")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"{what} name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
        if name in seen:
            raise ValueError(f"{what} contains {name!r} more than once")
        seen.add(name)


def parse_names(spec: str) -> tuple[str, ...]:
    """Names from a file (one per line) or a comma-separated string. A spec that looks like a
    file name but names no file is refused: read as a class, a mistyped path tags nonsense."""
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            return tuple(line.strip() for line in f if line.strip() and not line.startswith("#"))
    if looks_like_path(spec):
        raise ValueError(f"names file {spec!r} does not exist")
    return tuple(part.strip() for part in spec.split(","))


def looks_like_path(spec: str) -> bool:
    """Whether a spec without a comma has a folder or a file extension ("lists/robots",
    "mynames.txt"), as no class name does."""
    extension = os.path.splitext(spec)[1][1:]
    return "," not in spec and ("/" in spec or os.sep in spec or extension.isalnum())


class VocabularyStage:
    """What TagCLIP and CLIP-ES share: a vocabulary (with its text features) swapped whole under
    `_lock` between images, and siblings that compute with the same model and caches. A stage
    sets `settings`, `_lock` and `_vocab_state` (the vocabulary first) and defines `set_vocabulary`."""

    settings: Any
    _lock: threading.Lock
    _vocab_state: tuple

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        raise NotImplementedError

    def sharing(self: S, vocabulary: Vocabulary, settings: Any) -> S:
        """A stage over `vocabulary` with `settings` that computes with this one's model, vision
        tower and text cache (no copy, no second compile): run the two only one at a time, as
        the tower's working memory is shared."""
        other = copy.copy(self)
        other.settings = settings
        other._lock = threading.Lock()
        other.set_vocabulary(vocabulary)
        return other

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocab_state[0]
