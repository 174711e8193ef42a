"""What the `tagclip` verbs share: model and vocabulary options, image lists, progress and
failure reporting, exit codes.

The model's modules (torch, open_clip) are imported by the functions that build a model, not
here: `tagclip --help` and usage errors answer without loading them (about 4 s).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tqdm import tqdm

from ..core.dataset_profiles import PROFILES, DatasetProfile, affinity_start, resolve_profile
from ..core.image import (DEFAULT_MAX_INPUT_SIDE, ImageError, check_max_side, downscale_note, image_files,
                          read_image)
from ..core.settings import PRECISION_NAMES, TagClipSettings, default_cache_dir
from ..core.tags import TagResult
from . import EXIT_USAGE  # noqa: F401 (the verbs take it from here)

if TYPE_CHECKING:
    from ..core.loading import LoadedModel
    from ..core.pipeline import Perception
    from ..core.tagclip import TagClip
    from ..core.text import TextFeatureCache

PROGRESS_MIN_IMAGES = 5
EXIT_SOME_FAILED = 1
T = TypeVar("T")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every verb that needs a model and a vocabulary."""
    group = parser.add_argument_group("model")
    group.add_argument("--weights", help="local checkpoint (OpenAI .pt, state dict or open_clip); "
                       "default $TAGCLIP_WEIGHTS, else --pretrained's download")
    group.add_argument("--model", default="ViT-B-16", help="open_clip architecture name")
    group.add_argument("--pretrained", default="openai", help="open_clip pretrained tag")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--precision", default="fp32", choices=PRECISION_NAMES,
                       help="fp32; bf16 (CPU or CUDA: about 2x faster on CPUs with bf16 "
                            "instructions); fp16 (CUDA). docs/precision.md")
    group.add_argument("--compile", action="store_true",
                       help="compile the fixed-shape passes (torch.compile, CUDA graphs on a GPU)")
    group.add_argument("--cache-dir", default=default_cache_dir(),
                       help="text-feature cache folder ('' keeps it in memory only)")
    vocab = parser.add_argument_group("vocabulary and its settings (default: the profile's)")
    add_vocab_argument(vocab)
    vocab.add_argument("--background", default=None,
                       help="background names (voc, coco, file or 'a,b'); default: the vocabulary's")
    vocab.add_argument("--threshold", type=unit_interval, default=None,
                       help="relative tag threshold (profiles: 0.5; cocostuff 0.1)")
    vocab.add_argument("--candidate-threshold", type=unit_interval, default=None,
                       help="relative threshold for CWR candidates (profiles: 0.5; cocostuff 0.1)")
    vocab.add_argument("--affinity-blocks", type=positive_int, default=None, metavar="N",
                       help="DMAR's affinity averages the N blocks before the last (profiles: 3; "
                            "cocostuff: all)")
    group.add_argument("--max-input-side", type=max_input_side, default=DEFAULT_MAX_INPUT_SIDE,
                       metavar="PX", help="images whose longer side exceeds PX pixels are "
                       "downscaled for the model (masks keep the image's size); bounds memory "
                       f"per image (default {DEFAULT_MAX_INPUT_SIDE}; 0: always native size)")


def add_vocab_argument(parser: argparse._ActionsContainer) -> None:
    """--vocab: a dataset profile or a vocabulary of one's own."""
    parser.add_argument("--vocab", default="voc",
                        help=f"dataset profile ({', '.join(PROFILES)}, any case: classes, background "
                        "and settings of the paper's benchmark), a names file, 'a,b,c', or '=name' "
                        "for the one class name")


def number(text: str) -> float:
    """An option's text as a float; NaN when it is not a number, so that every range check
    below refuses it with its own sentence."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def unit_interval(text: str) -> float:
    """A threshold option: a number in [0, 1]."""
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], not {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A resource option (GPUs per worker): a number of at least 0."""
    value = number(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, not {text!r}")
    return value


def positive_float(text: str) -> float:
    """A resource option (CPUs per worker): a number above 0."""
    value = non_negative_float(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count option: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def max_input_side(text: str) -> int | None:
    """--max-input-side: a positive number of pixels, or 0 for no limit (None)."""
    try:
        value = int(text)
        return check_max_side(value or None)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels (0: no limit), not {text!r}") from None


def profile_from(args: argparse.Namespace) -> DatasetProfile:
    """The dataset profile --vocab names (or a custom one), with --background's names."""
    return resolve_profile(args.vocab, args.background)


def tag_overrides(args: argparse.Namespace) -> dict:
    """The TagCLIP settings given on the command line (None: the profile's)."""
    blocks = args.affinity_blocks
    return {"tag_threshold": args.threshold, "candidate_threshold": args.candidate_threshold,
            "affinity_start": None if blocks is None else affinity_start(blocks),
            "max_input_side": args.max_input_side}


def tag_settings(args: argparse.Namespace, profile: DatasetProfile) -> TagClipSettings:
    """TagCLIP settings: the profile's, with the command line's overrides."""
    return profile.tag_settings(**tag_overrides(args))


def load_model_from(args: argparse.Namespace) -> tuple[LoadedModel, TextFeatureCache]:
    """The model and its text-feature cache from parsed arguments (raises WeightsError)."""
    from ..core.loading import load_model, weights_setting
    from ..core.text import TextFeatureCache
    loaded = load_model(args.model, args.pretrained, weights_setting(args.weights), args.device,
                        args.precision, args.compile)
    return loaded, TextFeatureCache(loaded, args.cache_dir or None)


def build_classifier(args: argparse.Namespace, profile: DatasetProfile | None = None) -> TagClip:
    """Model, profile and TagCLIP from parsed arguments (raises ValueError/WeightsError)."""
    profile = profile or profile_from(args)  # a mistyped --vocab is said before torch loads
    from ..core.tagclip import TagClip
    loaded, cache = load_model_from(args)
    return TagClip(loaded, profile.vocabulary, tag_settings(args, profile), cache)


def build_perception(args: argparse.Namespace, profile: DatasetProfile) -> Perception:
    """Model, TagCLIP and CLIP-ES over the profile from parsed arguments, for the verbs that
    classify and then segment (raises WeightsError)."""
    from ..core.pipeline import Perception
    loaded, cache = load_model_from(args)
    return Perception.for_profile(loaded, profile, cache, tag_overrides(args))


def expand_images(paths: Sequence[str]) -> list[str]:
    """Image paths, with folders replaced by the image files they hold (sorted)."""
    result = []
    for path in paths:
        if os.path.isdir(path):
            result += image_files(path)
        else:
            result.append(path)
    return result


def progress(items: Sequence[T], what: str) -> Iterator[T]:
    """Iterate with a progress bar on stderr when there are many items."""
    return iter(tqdm(items, desc=what, unit="img", disable=len(items) < PROGRESS_MIN_IMAGES,
                     file=sys.stderr))


def report(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    tqdm.write(message, file=sys.stderr)


def report_skipped(skipped: int, total: int, where: str) -> None:
    """Say how many images a resumed run leaves alone, and how to redo them."""
    if skipped:
        report(f"{skipped} of {total} images already done in {where}; skipping them "
               f"(--overwrite redoes them)")


def finish(failed: int, total: int, what: str = "could not be read") -> int:
    """The exit code of a run over `total` images of which `failed` failed, said on stderr."""
    if failed:
        print(f"{failed} of {total} images {what}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def read_each(items: Sequence[T], path_of: Callable[[T], str], what: str,
              failures: list[str]) -> Iterator[tuple[T, np.ndarray]]:
    """(item, RGB image) for every item whose image reads, with a progress bar; the others
    are reported, skipped and added to `failures`."""
    for item in progress(items, what):
        try:
            rgb = read_image(path_of(item))
        except ImageError as exc:
            failures.append(str(exc))
            report(f"skipping {exc}")
            continue
        yield item, rgb


def classify_each(classifier: TagClip, items: Sequence[T], path_of: Callable[[T], str], what: str,
                  failures: list[str]) -> Iterator[tuple[T, TagResult]]:
    """(item, TagCLIP result) for every item whose image reads (see `read_each`); the first
    image that is downscaled for the model is reported."""
    noted = False
    for item, rgb in read_each(items, path_of, what, failures):
        note = downscale_note(*rgb.shape[:2], classifier.loaded.patch_size,
                              classifier.settings.max_input_side)
        if note and not noted:
            report(f"note: {note} (--max-input-side)")
            noted = True
        yield item, classifier.classify(rgb)


def add_split_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """--split, --img-root and --ext: images named by a split file's stems."""
    parser.add_argument("--split", required=required,
                        help="split/tag file: one 'stem [id id ...]' per line (ids 0-based)")
    parser.add_argument("--img-root", required=required, help="folder of <stem><ext> images")
    parser.add_argument("--ext", default=".jpg", help="image file extension (default .jpg)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose outputs exist (default: skip them, resuming)")
