"""`tagclip segment`: label-mask PNGs (and CAMs) for the tags of a tag file, resumable.

The model's and the CRF's modules are imported where they are used, so that `--help` and
usage errors answer without loading torch (see common.py).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..core import dataset
from ..core.dataset import SplitEntry
from ..core.dataset_profiles import DatasetProfile
from ..core.settings import SEGMENTATION_METHODS, SegmentationSettings
from . import ray_jobs
from .common import (add_model_arguments, add_split_arguments, finish, load_model_from, profile_from,
                     read_each, report, report_skipped, tag_overrides)

if TYPE_CHECKING:
    from ..core.segment import Segmentation
    Segmenter = Callable[[np.ndarray, list[int]], Segmentation]  # (rgb, class ids) → result

HELP = "label-mask PNGs for the tags of a tag file"
DESCRIPTION = ("Writes OUT/<stem>.png (palette PNG: 0 background, class id + 1) for the "
               "tags on each line of the tag file (e.g. from `tagclip tag`; class ids are "
               "0-based indices into the vocabulary, cocostuff's 171 classes included; "
               "cocostuff masks have no background: every pixel gets a tag). A line "
               "without tags gets an all-background mask (and, with --save-cams, a CAM "
               "file with no maps), so evaluation still counts it. Images whose outputs "
               "are all complete are skipped unless --overwrite, so a killed run resumes.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser, required=True)
    parser.add_argument("--out", required=True, help="folder for <stem>.png (and .npy)")
    parser.add_argument("--save-cams", action="store_true",
                        help="also write <stem>.npy: {'keys': class ids, 'cams': float16 maps}")
    parser.add_argument("--method", default="clipes", choices=SEGMENTATION_METHODS)
    parser.add_argument("--crf", action="store_true", help="dense CRF on the masks (paper's +CRF)")
    parser.add_argument("--crf-colours", default="official", choices=("official", "rgb"),
                        help="image the CRF compares: the official wrapped mean-subtracted "
                             "one (default, the paper's numbers) or plain RGB")
    add_model_arguments(parser)
    ray_jobs.add_ray_arguments(parser)


def build_segmenter(args: argparse.Namespace,
                    profile: DatasetProfile) -> tuple[Segmenter, SegmentationSettings]:
    """A function (rgb, class ids) → Segmentation by the chosen method, and its settings.
    CLIP-ES needs no TagCLIP (and so no 85-template text features); DMAR classifies to get
    its maps."""
    from ..core.pipeline import profile_settings
    from ..core.segment import ClipEsSegmenter, dmar_segment
    from ..core.tagclip import TagClip
    tag, settings = profile_settings(profile, tag_overrides(args))
    loaded, cache = load_model_from(args)
    if args.method == "clipes":
        return ClipEsSegmenter(loaded, profile.vocabulary, settings, cache).segment, settings
    tagger = TagClip(loaded, profile.vocabulary, tag, cache)
    return lambda rgb, ids: dmar_segment(tagger.classify(rgb), rgb.shape[:2], settings, ids), settings


def segment_image(rgb: np.ndarray, ids: list[int], segmenter: Segmenter,
                  args: argparse.Namespace, settings: SegmentationSettings) -> tuple[np.ndarray, np.ndarray]:
    """(label mask, refined CAMs) of one image; no tags give an all-background mask and no
    CAMs (documented behaviour: the image is not skipped, so evaluation sees it)."""
    if not ids:
        return np.zeros(rgb.shape[:2], np.uint16), np.zeros((0, *rgb.shape[:2]), np.float32)
    result = segmenter(rgb, ids)
    mask = result.mask
    if args.crf:
        from ..core.crf import CrfSettings, crf_label_mask
        crf = CrfSettings(official_colour_wrap=args.crf_colours == "official")
        mask = crf_label_mask(rgb, result.cams, result.class_indices, settings.background_power, crf)
    return mask, result.cams


def segment_images(args: argparse.Namespace, profile: DatasetProfile, todo: list[SplitEntry],
                   failures: list[str]) -> Iterator[tuple[SplitEntry, np.ndarray, np.ndarray]]:
    """(entry, label mask, CAMs) of each image of `todo` segmented in this process."""
    segmenter, settings = build_segmenter(args, profile)
    for entry, rgb in read_each(todo, lambda e: dataset.image_path(args.img_root, e.stem, args.ext),
                                "segment", failures):
        yield (entry, *segment_image(rgb, list(entry.labels), segmenter, args, settings))


def segment_on_ray(args: argparse.Namespace, todo: list[SplitEntry], failures: list[str]
                   ) -> Iterator[tuple[SplitEntry, np.ndarray, np.ndarray]]:
    """What `segment_images` gives, from workers on a Ray cluster (--ray), as they finish."""
    def call(entry: SplitEntry) -> tuple:
        return os.path.abspath(dataset.image_path(args.img_root, entry.stem, args.ext)), list(entry.labels)
    for entry, (mask, cams) in ray_jobs.run_each("segment", args, todo, call, failures):
        yield entry, mask, cams


def segment_inputs(args: argparse.Namespace, num_classes: int) -> list[SplitEntry]:
    """The tag file's entries; ValueError when no line has a tag (a plain split of stems
    would otherwise give all-background masks without complaint)."""
    entries = dataset.read_split(args.split, num_classes)
    if not any(e.labels for e in entries):
        raise ValueError(f"{args.split} has no class ids on any line; segment reads tags in the "
                         f"'stem id id ...' format, e.g. the file `tagclip tag` writes")
    return entries


def run(args: argparse.Namespace) -> int:
    ray_jobs.check_ray_arguments(args)
    profile = profile_from(args)
    dataset.check_mask_classes(len(profile.vocabulary.classes))
    if args.crf:
        if not profile.background_channel:
            raise ValueError(f"--crf is not available for {args.vocab}, whose masks have no "
                             "background channel; run without --crf")
        from ..core.crf import require_crf
        require_crf()
    entries = segment_inputs(args, len(profile.vocabulary.classes))

    def outputs(entry: SplitEntry) -> list[str]:
        return dataset.segment_outputs(args.out, entry.stem, args.save_cams)

    dataset.remove_stale_partials(path for entry in entries for path in outputs(entry))
    todo, skipped = dataset.split_done(entries, lambda e: dataset.outputs_complete(outputs(e)),
                                       args.overwrite)
    report_skipped(skipped, len(entries), args.out)
    failures: list[str] = []
    if todo:
        results = (segment_on_ray(args, todo, failures) if args.ray else
                   segment_images(args, profile, todo, failures))
        for entry, mask, cams in results:
            if not entry.labels:
                report(f"{entry.stem}: no tags on line {entry.line}; writing an all-background mask")
            paths = outputs(entry)
            if args.save_cams:
                dataset.save_cams(paths[1], entry.labels, cams)
            dataset.save_label_png(paths[0], mask)
    print(f"{args.out}: segmented {len(todo) - len(failures)} images, {skipped} already done")
    return finish(len(failures), len(entries))
