"""Tags that hold still over a stream: smoothed scores, a class admitted after a run of frames
and released with hysteresis.

A camera's consecutive frames differ by noise, and a class near the tag threshold flickers in and
out. `StableTags` smooths each class's score exponentially (`alpha` is the new frame's weight),
admits a class once its smoothed score was above the frame's tag threshold (TagCLIP's relative
threshold, applied to the smoothed scores) for `min_frames` consecutive frames, and keeps it until
its smoothed score falls below `release` × that threshold. A new vocabulary, a gap between frame
stamps longer than `reset_after` seconds, or a stamp going backwards (a bag played again) starts
over from the next frame alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .tags import Tag, TagResult


# What each setting means, for the node's `temporal.*` parameters and `tagclip bag`'s options.
ENABLED_HELP = ("stable tags: tags, classification, label_mask and detections follow smoothed "
                "scores with hysteresis, not each frame alone")
SETTING_HELP = {
    "alpha": "weight of the new frame's scores in the smoothed ones",
    "min_frames": "consecutive frames a class must be above the tag threshold to become a tag",
    "release": "a tag stays one until its smoothed score falls below this times the tag threshold",
    "reset_after": "seconds between frame stamps after which stable tags start over",
}


@dataclass(frozen=True)
class TemporalSettings:
    """How tags are stabilised; see the module's description."""

    alpha: float = 0.5
    min_frames: int = 3
    release: float = 0.8
    reset_after: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"temporal.alpha is the new frame's weight in (0, 1], not {self.alpha}")
        if self.min_frames < 1:
            raise ValueError(f"temporal.min_frames must be at least 1, not {self.min_frames}")
        if not 0.0 <= self.release <= 1.0:
            raise ValueError(f"temporal.release must lie in [0, 1], not {self.release}")
        if not self.reset_after > 0.0:
            raise ValueError(f"temporal.reset_after must be positive seconds, not {self.reset_after}")


class StableTags:
    """The stream's state: smoothed scores, each class's run of frames above the threshold, and
    the classes that are tags now. Feed it every frame's result in stamp order."""

    def __init__(self, settings: TemporalSettings = TemporalSettings()) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame starts it again."""
        self._classes: tuple[str, ...] | None = None
        self._stamp: float | None = None
        self._smoothed = np.zeros(0)
        self._run = np.zeros(0, np.int64)
        self._stable = np.zeros(0, bool)

    def update(self, result: TagResult, threshold_factor: float, stamp: float) -> TagResult:
        """`result` with `scores` smoothed and `tags` the stable ones (best first by smoothed
        score; possibly none), for the frame stamped `stamp` seconds; `threshold_factor` is
        TagCLIP's relative tag threshold."""
        scores = np.asarray(result.scores, np.float64)
        if self._starts_over(result.vocabulary.classes, stamp):
            self.reset()
            self._classes = result.vocabulary.classes
            self._smoothed, self._run = scores.copy(), np.zeros(len(scores), np.int64)
            self._stable = np.zeros(len(scores), bool)
        else:
            alpha = self.settings.alpha
            self._smoothed = alpha * scores + (1.0 - alpha) * self._smoothed
        self._stamp = stamp
        smoothed = self._smoothed
        threshold = smoothed.min() + threshold_factor * (smoothed.max() - smoothed.min())
        self._run = np.where(smoothed > threshold, self._run + 1, 0)
        kept = self._stable & (smoothed >= self.settings.release * threshold)
        self._stable = kept | (self._run >= self.settings.min_frames)
        labels = result.vocabulary.classes
        order = sorted(np.flatnonzero(self._stable), key=lambda i: -smoothed[i])
        tags = [Tag(int(i), labels[i], float(smoothed[i])) for i in order]
        return replace(result, scores=smoothed.astype(np.float32), tags=tags)

    def selection(self, threshold_factor: float, stamp: float) -> Callable[[TagResult], TagResult]:
        """`update` for the frame stamped `stamp` seconds: what `Perception.run` takes as
        `select`, so the frame's mask and detections are of its stable tags."""
        return lambda result: self.update(result, threshold_factor, stamp)

    def _starts_over(self, classes: tuple[str, ...], stamp: float) -> bool:
        """Whether this frame begins a new stream (first frame, new vocabulary, long gap, or a
        stamp earlier than the last)."""
        if self._stamp is None or classes != self._classes:
            return True
        gap = stamp - self._stamp
        return gap < 0 or gap > self.settings.reset_after
