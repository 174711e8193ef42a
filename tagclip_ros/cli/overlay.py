"""`tagclip overlay`: pictures of each image with its label mask tinted in and its tags written
(resumable)."""
from __future__ import annotations

import argparse
import os

from tqdm import tqdm

from ..core import dataset
from ..core.dataset import SplitEntry
from ..core.overlay import render_overlay, tag_captions
from ..core.settings import SEGMENTATION_METHODS
from ..core.dataset_profiles import DatasetProfile
from .common import (add_model_arguments, build_perception, expand_images, finish, profile_from,
                     read_each, report_skipped)

HELP = "pictures: masks and tags drawn on the images"
DESCRIPTION = ("Writes OUT/<stem>_overlay.png for each image: its label mask tinted in and its "
               "tags written. Images whose picture is complete are skipped unless "
               "--overwrite, so a killed run resumes.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", required=True, help="folder for <stem>_overlay.png")
    parser.add_argument("--method", default="clipes", choices=SEGMENTATION_METHODS)
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose picture exists (default: skip them, resuming)")
    add_model_arguments(parser)


def overlay_path(out_dir: str, entry: SplitEntry) -> str:
    """The picture `tagclip overlay` writes for one image."""
    return os.path.join(out_dir, f"{entry.stem}_overlay.png")


def run(args: argparse.Namespace) -> int:
    profile = profile_from(args)
    images = expand_images(args.images)
    items = list(zip(images, dataset.stems_of(images)))
    dataset.remove_stale_partials(overlay_path(args.out, entry) for _, entry in items)
    todo, skipped = dataset.split_done(
        items, lambda item: dataset.output_complete(overlay_path(args.out, item[1])), args.overwrite)
    report_skipped(skipped, len(items), args.out)
    failures: list[str] = []
    if todo:  # a finished run needs no model
        draw_overlays(args, profile, todo, failures)
    return finish(len(failures), len(images))


def draw_overlays(args: argparse.Namespace, profile: DatasetProfile,
                  todo: list[tuple[str, SplitEntry]], failures: list[str]) -> None:
    """Classify and segment each image and write its picture; unreadable images are reported
    and added to `failures`."""
    perception = build_perception(args, profile)
    for (path, entry), rgb in read_each(todo, lambda item: item[0], "overlay", failures):
        perceived = perception.run(rgb, args.method)
        captions = tag_captions(perceived.tags.tags)
        out = overlay_path(args.out, entry)
        dataset.save_rgb_png(out, render_overlay(rgb, perceived.segmentation.mask, captions))
        tqdm.write(f"{path}: {', '.join(c.text for c in captions)} -> {out}")
