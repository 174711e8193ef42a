"""What TagCLIP reports: the tags of an image and everything computed for it.

Plain data (no torch at import), so that the modules that only read results (detections,
temporal tags, overlays, messages) import without loading the model's libraries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .vocab import Vocabulary

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Tag:
    """A reported class: `index` into the vocabulary, its label and final score."""

    index: int
    label: str
    score: float

    @property
    def class_id(self) -> int:
        """Id used in label masks and messages: 0 is background, vocabulary entry i is i + 1."""
        return self.index + 1


@dataclass
class TagResult:
    """Everything TagCLIP computed for one image."""

    vocabulary: Vocabulary
    scores: np.ndarray        # final score per foreground class, vocabulary order
    local_scores: np.ndarray  # DMAR score per foreground class
    tags: list[Tag]           # classes above the relative threshold, best first
    refined: torch.Tensor = field(repr=False)  # DMAR map (patches, all classes)
    grid: tuple[int, int] = (0, 0)             # patch grid (rows, cols)
    last_block_input: torch.Tensor | None = field(default=None, repr=False)  # (1, tokens, width)


def relative_threshold_tags(scores: np.ndarray, labels: tuple[str, ...], factor: float) -> list[Tag]:
    """Classes scoring above min + factor·(max − min), best first; the top class if none does."""
    threshold = scores.min() + factor * (scores.max() - scores.min())
    chosen = np.flatnonzero(scores > threshold)
    if chosen.size == 0:
        chosen = np.array([int(np.argmax(scores))])
    chosen = sorted(chosen, key=lambda i: -scores[i])
    return [Tag(int(i), labels[i], float(scores[i])) for i in chosen]
