"""`tagclip overlay`: pictures of each image with its label mask tinted in and its tags written."""
from __future__ import annotations

import argparse
import os

from tqdm import tqdm

from ..core import TagClipSettings, load_vocabulary
from ..core import dataset
from ..core.overlay import render_overlay
from ..core.pipeline import SEGMENTATION_METHODS, Perception
from .common import add_model_arguments, expand_images, finish, load_model_from, read_each

HELP = "pictures: masks and tags drawn on the images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", required=True, help="folder for <stem>_overlay.png")
    parser.add_argument("--method", default="clipes", choices=SEGMENTATION_METHODS)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocab, args.background)
    images = expand_images(args.images)
    stems = dataset.stems_of(images)
    loaded, cache = load_model_from(args)
    perception = Perception(loaded, vocabulary, TagClipSettings(tag_threshold=args.threshold),
                            text_cache=cache)
    failures: list[str] = []
    for (path, entry), rgb in read_each(list(zip(images, stems)), lambda item: item[0],
                                        "overlay", failures):
        perceived = perception.run(rgb, args.method)
        captions = [(t.class_id, f"{t.label} {t.score:.2f}") for t in perceived.tags.tags]
        out = os.path.join(args.out, f"{entry.stem}_overlay.png")
        dataset.save_rgb_png(out, render_overlay(rgb, perceived.segmentation.mask, captions))
        tqdm.write(f"{path}: {', '.join(c for _, c in captions)} -> {out}")
    return finish(len(failures), len(images))
