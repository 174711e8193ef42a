"""Classify, then segment: the per-frame work the node and the CLI share.

`Perception` holds a TagCLIP classifier and a CLIP-ES segmenter over one vocabulary and runs
them on an image: tags always, a label mask when asked for, by the chosen method. Images larger
than the settings' `max_input_side` are downscaled for the model (core/image.py); tags are for
the whole image and masks come back at its size.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .image import model_input_size
from .loading import LoadedModel
from .profile import NO_TIMER, StageTimer
from .dataset_profiles import DatasetProfile
from .segment import ClipEsSegmenter, Segmentation, Trunk, dmar_segment
from .settings import SEGMENTATION_METHODS, SegmentationSettings, TagClipSettings
from .tagclip import AttentionVote, TagClip
from .tags import TagResult
from .text import TextFeatureCache
from .vocab import Vocabulary


@dataclass
class Perceived:
    """What one frame gave: TagCLIP's result, the optional segmentation, and the time taken."""

    tags: TagResult
    segmentation: Segmentation | None
    seconds: float


class Perception:
    """TagCLIP tags and, on request, label masks, over a vocabulary that can change."""

    def __init__(self, loaded: LoadedModel, vocabulary: Vocabulary,
                 tag_settings: TagClipSettings = TagClipSettings(),
                 segmentation_settings: SegmentationSettings | None = None,
                 text_cache: TextFeatureCache | None = None) -> None:
        """`segmentation_settings` defaults to CLIP-ES's, with the tagger's `max_input_side`
        (so that one limit governs the frame)."""
        if segmentation_settings is None:
            segmentation_settings = SegmentationSettings(max_input_side=tag_settings.max_input_side)
        self.tagger = TagClip(loaded, vocabulary, tag_settings, text_cache)
        self.segmenter = ClipEsSegmenter(loaded, vocabulary, segmentation_settings,
                                         self.tagger.text_cache)

    @property
    def vocabulary(self) -> Vocabulary:
        return self.tagger.vocabulary

    @classmethod
    def for_profile(cls, loaded: LoadedModel, profile: DatasetProfile,
                    text_cache: TextFeatureCache | None = None, tag_overrides: dict | None = None,
                    segmentation_overrides: dict | None = None) -> Perception:
        """Perception over a dataset profile: its vocabulary and both stages' settings, with
        overrides of each (`profile_settings`)."""
        tag_settings, segmentation_settings = profile_settings(profile, tag_overrides,
                                                               segmentation_overrides)
        return cls(loaded, profile.vocabulary, tag_settings, segmentation_settings, text_cache)

    def sharing(self, vocabulary: Vocabulary, tag_settings: TagClipSettings,
                segmentation_settings: SegmentationSettings) -> Perception:
        """A Perception over `vocabulary` with these settings that computes with this one's
        models, vision towers and text caches (no copy of the weights, no second compile):
        another vocabulary beside this one's (the node's queries). Run the two only one at a
        time (on one thread), as the towers' working memory is shared."""
        other = copy.copy(self)
        other.tagger = self.tagger.sharing(vocabulary, tag_settings)
        other.segmenter = self.segmenter.sharing(vocabulary, segmentation_settings)
        return other

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Switch both stages to `vocabulary`; only names never encoded before cost time."""
        self.tagger.set_vocabulary(vocabulary)
        self.segmenter.set_vocabulary(vocabulary)

    def set_profile(self, profile: DatasetProfile, tag_overrides: dict | None = None,
                    segmentation_overrides: dict | None = None) -> None:
        """Switch to a dataset profile's vocabulary and settings together (as `for_profile`);
        call it between frames (the node does, on its inference thread). Only names never
        encoded before cost time."""
        self.tagger.settings, self.segmenter.settings = profile_settings(
            profile, tag_overrides, segmentation_overrides)
        self.set_vocabulary(profile.vocabulary)

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        """The size TagCLIP feeds the model for a height × width image."""
        return model_input_size(height, width, self.tagger.loaded.patch_size,
                                self.tagger.settings.max_input_side)

    def _shares_trunk(self, rgb: np.ndarray, segmentation: str | None) -> bool:
        """Whether CLIP-ES can reuse TagCLIP's pass through blocks 1..11 for this image (it
        must see the image at the same size)."""
        if segmentation != "clipes":
            return False
        patch = self.tagger.loaded.patch_size
        size = self.model_input_size(*rgb.shape[:2])
        if size != model_input_size(*rgb.shape[:2], patch, self.segmenter.settings.max_input_side):
            return False
        return self.segmenter.shares_trunk(self.tagger.loaded, (size[0] // patch, size[1] // patch))

    def run(self, rgb: np.ndarray, segmentation: str | None = "clipes",
            timer: StageTimer = NO_TIMER,
            select: Callable[[TagResult], TagResult] | None = None) -> Perceived:
        """Tags for `rgb`, and a label mask by `segmentation` (clipes, dmar, or None for none);
        `timer` times the stages (TagCLIP's, then clipes or dmar_masks). `select`, if given,
        replaces TagCLIP's result before the mask is made (stable tags over a stream): the mask
        is then of its tags, all background when it has none."""
        check_segmentation(segmentation)
        start = time.perf_counter()
        recorder = self._trunk_recorder(rgb, segmentation)
        result = self.tagger.classify(rgb, recorder, timer)
        result, segmented = self._after_classify(rgb, result, recorder, segmentation, timer, select)
        return Perceived(result, segmented, time.perf_counter() - start)

    def run_batch(self, rgbs: Sequence[np.ndarray], segmentation: str | None = "clipes",
                  timer: StageTimer = NO_TIMER,
                  selects: Sequence[Callable[[TagResult], TagResult] | None] | None = None
                  ) -> list[Perceived]:
        """`run` of several frames (one per camera) at once: tags by `TagClip.classify_batch`
        (equal-sized frames through the vision tower together, the CWR crops of all frames in
        one pass), then per frame what `run` does after classifying, with `selects[i]` as frame
        i's `select`. Each result equals `run(rgbs[i], segmentation, select=selects[i])`'s
        (float32 scores to 1e-4, the same tags, the same label mask); `timer` adds up the
        stages of all frames. Each Perceived's `seconds` is the batch's wall time divided by
        the number of frames: the frames share the passes, so no frame has a time of its own.
        Worth it where `batching_pays`."""
        check_segmentation(segmentation)
        if selects is None:
            selects = [None] * len(rgbs)
        if len(selects) != len(rgbs):
            raise ValueError(f"{len(selects)} selects for {len(rgbs)} images: give one per image (or None)")
        start = time.perf_counter()
        recorders = [self._trunk_recorder(rgb, segmentation) for rgb in rgbs]
        results = self.tagger.classify_batch(rgbs, recorders, timer)
        done = [self._after_classify(rgb, result, recorder, segmentation, timer, select)
                for rgb, result, recorder, select in zip(rgbs, results, recorders, selects)]
        seconds = (time.perf_counter() - start) / max(len(rgbs), 1)
        return [Perceived(result, segmented, seconds) for result, segmented in done]

    def _trunk_recorder(self, rgb: np.ndarray, segmentation: str | None) -> AttentionVote | None:
        """The hook that keeps TagCLIP's blocks 1..11 for CLIP-ES, when it can reuse them."""
        return self.segmenter.trunk_recorder() if self._shares_trunk(rgb, segmentation) else None

    def _after_classify(self, rgb: np.ndarray, result: TagResult, recorder: AttentionVote | None,
                        segmentation: str | None, timer: StageTimer,
                        select: Callable[[TagResult], TagResult] | None
                        ) -> tuple[TagResult, Segmentation | None]:
        """A frame's work after TagCLIP (`run`'s and `run_batch`'s, one copy): `select`, then
        the label mask by `segmentation` from the result's tags (all background without tags),
        CLIP-ES reusing the classifying pass through `recorder` where it was recorded."""
        if select is not None:
            result = select(result)
        segmented = None
        if segmentation is not None and not result.tags:
            segmented = Segmentation([], np.zeros((0, *result.grid), np.float32),
                                     np.zeros(rgb.shape[:2], np.uint16))
        elif segmentation == "clipes":
            trunk = Trunk(result.last_block_input, recorder) if recorder else None
            with timer.stage("clipes"):
                segmented = self.segmenter.segment(rgb, [t.index for t in result.tags], trunk)
        elif segmentation == "dmar":
            with timer.stage("dmar_masks"):
                segmented = dmar_segment(result, rgb.shape[:2], self.segmenter.settings)
        return result, segmented


def check_segmentation(segmentation: str | None) -> None:
    """ValueError, naming the methods, unless `segmentation` is one of them or None."""
    if segmentation not in (None, *SEGMENTATION_METHODS):
        raise ValueError(f"segmentation method {segmentation!r} is not one of "
                         f"{', '.join(SEGMENTATION_METHODS)}")


def batching_pays(loaded: LoadedModel) -> bool:
    """Whether `Perception.run_batch` over several cameras' frames beats `run` one frame at a
    time with this model (the node batches only then, unless told otherwise).

    On CUDA, yes: one frame's passes leave most of a GPU idle and cost a kernel launch per
    operation, and a batch shares both. On the CPU, no: a 480×640 frame's matrix products
    already keep every core busy, so a batch does the same work and only needs more memory;
    `bench/bench_batching.py --quick` measured batched / one at a time per frame at 1.01 in
    CPU time and 1.17 in wall time (mean over batches of 2–4 frames, ViT-B/16, 2 shared cores
    of an AMD EPYC; docs/benchmarks.md, "Batching"). Not yet measured on a GPU
    (`--device cuda`)."""
    return loaded.device.type == "cuda"


def profile_settings(profile: DatasetProfile, tag_overrides: dict | None = None,
                     segmentation_overrides: dict | None = None
                     ) -> tuple[TagClipSettings, SegmentationSettings]:
    """Both stages' settings for `profile` with the overrides of each (see
    `DatasetProfile.tag_settings`); CLIP-ES takes TagCLIP's `max_input_side` unless given its own,
    so that one limit governs the frame."""
    tag = profile.tag_settings(**(tag_overrides or {}))
    segmentation = profile.segmentation_settings(
        **{"max_input_side": tag.max_input_side, **(segmentation_overrides or {})})
    return tag, segmentation
