"""`tagclip`: the command line for TagCLIP tagging (and, later, segmentation and datasets).

Every verb loads the model through the same core the ROS node uses. Errors a user can fix are
printed as one sentence; images that cannot be read are reported and skipped, and the exit code
says whether anything failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence

from tqdm import tqdm

from .core import (ImageError, TagClip, TagClipSettings, TextFeatureCache, WeightsError,
                   default_cache_dir, load_model, load_vocabulary, read_image)
from .core.image import image_files

PROGRESS_MIN_IMAGES = 5
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every verb that needs a model and a vocabulary."""
    group = parser.add_argument_group("model")
    group.add_argument("--weights", help="local checkpoint (OpenAI .pt, state dict or open_clip)")
    group.add_argument("--model", default="ViT-B-16", help="open_clip architecture name")
    group.add_argument("--pretrained", default="openai", help="open_clip pretrained tag")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    group.add_argument("--cache-dir", default=default_cache_dir(),
                       help="text-feature cache folder ('' keeps it in memory only)")
    vocab = parser.add_argument_group("vocabulary")
    vocab.add_argument("--vocab", default="voc", help="voc, coco, a names file, or 'a,b,c'")
    vocab.add_argument("--background", default=None,
                       help="background names (voc, coco, file or 'a,b'); default: the vocabulary's")
    vocab.add_argument("--threshold", type=float, default=0.5, help="relative tag threshold")


def build_classifier(args: argparse.Namespace) -> TagClip:
    """Model, vocabulary and TagCLIP from parsed arguments (raises ValueError/WeightsError)."""
    vocabulary = load_vocabulary(args.vocab, args.background)
    loaded = load_model(args.model, args.pretrained, args.weights, args.device, args.precision)
    cache = TextFeatureCache(loaded, args.cache_dir or None)
    return TagClip(loaded, vocabulary, TagClipSettings(tag_threshold=args.threshold), cache)


def expand_images(paths: Sequence[str]) -> list[str]:
    """Image paths, with folders replaced by the image files they hold (sorted)."""
    result = []
    for path in paths:
        if os.path.isdir(path):
            result += image_files(path)
        else:
            result.append(path)
    return result


def progress(items: Sequence[str], what: str) -> Iterator[str]:
    """Iterate with a progress bar on stderr when there are many items."""
    return iter(tqdm(items, desc=what, unit="img", disable=len(items) < PROGRESS_MIN_IMAGES,
                     file=sys.stderr))


def cmd_classify(args: argparse.Namespace) -> int:
    classifier = build_classifier(args)
    images = expand_images(args.images)
    results, failed = [], 0
    for path in progress(images, "classify"):
        try:
            result = classifier.classify(read_image(path))
        except ImageError as exc:
            failed += 1
            tqdm.write(f"skipping {exc}", file=sys.stderr)
            continue
        tags = ", ".join(f"{t.label} {t.score:.4f}" for t in result.tags)
        tqdm.write(f"{path}: {tags}")
        results.append({"image": path, "scores": [float(s) for s in result.scores],
                        "tags": [{"label": t.label, "score": t.score} for t in result.tags]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"classes": list(classifier.vocabulary.classes), "results": results}, f, indent=1)
    if failed:
        print(f"{failed} of {len(images)} images could not be read", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagclip", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    classify = verbs.add_parser("classify", help="print the tags of images")
    classify.add_argument("images", nargs="+", help="image files or folders")
    classify.add_argument("--json", help="write scores and tags to this JSON file")
    add_model_arguments(classify)
    classify.set_defaults(run=cmd_classify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "images") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.images += extra  # image paths given after the options
    try:
        return args.run(args)
    except (WeightsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
