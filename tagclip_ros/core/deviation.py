"""How far one model's results are from another's on the same images: the figures that let a
user choose a precision (or trust a device) with numbers.

For each image both models tag it and, per segmentation method, segment their own tags; the
deviation is the largest score difference, how many images got the same tags, and, where they
did, the share of pixels whose label is the same. Used by bench/bench_precision.py (the README's table) and by
the tests that hold reduced precision and CUDA to those figures.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .loading import LoadedModel
from .pipeline import Perception
from .dataset_profiles import DatasetProfile
from .segment import dmar_segment
from .tags import TagResult
from .text import TextFeatureCache

METHODS = ("clipes", "dmar")


@dataclass
class Deviation:
    """Differences of `other` from `reference` over a set of images."""

    images: int = 0
    max_score_diff: float = 0.0     # over every class of every image
    same_tags: int = 0              # images whose tag lists (classes and order) are equal
    # method → image name → share of equal mask pixels, for the images with the same tags
    pixel_agreement: dict[str, dict[str, float]] = field(default_factory=dict)

    def agreements(self, method: str, leave_out: Iterable[str] = ()) -> list[float]:
        """Shares of equal mask pixels for `method`, but for the images named in `leave_out`."""
        return [v for name, v in self.pixel_agreement.get(method, {}).items() if name not in leave_out]

    def min_agreement(self, method: str, leave_out: Iterable[str] = ()) -> float:
        """The lowest share of equal mask pixels over the images with the same tags (NaN if
        there is none)."""
        return min(self.agreements(method, leave_out) or [float("nan")])

    def mean_agreement(self, method: str, leave_out: Iterable[str] = ()) -> float:
        return float(np.mean(self.agreements(method, leave_out) or [float("nan")]))

    def add(self, name: str, reference: Outcome, other: Outcome) -> None:
        """Account image `name`, given each model's outcome."""
        self.images += 1
        diff = float(np.abs(reference.tags.scores.astype(np.float64) - other.tags.scores).max())
        self.max_score_diff = max(self.max_score_diff, diff)
        same = [t.index for t in reference.tags.tags] == [t.index for t in other.tags.tags]
        self.same_tags += same
        if same:  # masks of different tags differ by construction: not a precision effect
            for method, mask in reference.masks.items():
                agreement = float((mask == other.masks[method]).mean())
                self.pixel_agreement.setdefault(method, {})[name] = agreement

    def as_dict(self) -> dict:
        return {"images": self.images, "max_score_diff": self.max_score_diff,
                "same_tags": self.same_tags,
                "pixel_agreement": self.pixel_agreement}


@dataclass
class Outcome:
    """One model's result on one image: its tags and, per method, the label mask of them."""

    tags: TagResult
    masks: dict[str, np.ndarray]


def outcome(perception: Perception, rgb: np.ndarray, methods: Iterable[str] = METHODS) -> Outcome:
    """Tags and each method's mask from one TagCLIP pass (the DMAR mask reuses its map)."""
    methods = tuple(methods)
    perceived = perception.run(rgb, "clipes" if "clipes" in methods else None)
    masks = {"clipes": perceived.segmentation.mask} if "clipes" in methods else {}
    if "dmar" in methods:
        masks["dmar"] = dmar_segment(perceived.tags, rgb.shape[:2],
                                     perception.segmenter.settings).mask
    return Outcome(perceived.tags, masks)


def measure(reference: LoadedModel, other: LoadedModel, profile: DatasetProfile,
            images: Mapping[str, np.ndarray], cache_dir: str | None = None,
            methods: Iterable[str] = METHODS) -> Deviation:
    """The deviation of `other` from `reference` on RGB `images` (by name) over a dataset
    profile (its vocabulary and settings)."""
    methods = tuple(methods)
    perceptions = [Perception.for_profile(m, profile, TextFeatureCache(m, cache_dir))
                   for m in (reference, other)]
    deviation = Deviation()
    for name, rgb in images.items():
        deviation.add(name, *(outcome(p, rgb, methods) for p in perceptions))
    return deviation
