"""`tagclip classify`: print the tags of images (and write every score as JSON)."""
from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from .common import add_model_arguments, build_classifier, classify_each, expand_images, finish

HELP = "print the tags of images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--json", help="write scores and tags to this JSON file")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    classifier = build_classifier(args)
    images = expand_images(args.images)
    results, failures = [], []
    for path, result in classify_each(classifier, images, str, "classify", failures):
        tags = ", ".join(f"{t.label} {t.score:.4f}" for t in result.tags)
        tqdm.write(f"{path}: {tags}")
        results.append({"image": path, "scores": [float(s) for s in result.scores],
                        "tags": [{"label": t.label, "score": t.score} for t in result.tags]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"classes": list(classifier.vocabulary.classes), "results": results}, f, indent=1)
    return finish(len(failures), len(images))
