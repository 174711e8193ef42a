"""`tagclip evaluate-masks`: mIoU of label-mask PNGs against ground truth (the paper's protocol)."""
from __future__ import annotations

import argparse
import os
import sys

from ..core import dataset, load_vocabulary, metrics
from .common import EXIT_SOME_FAILED, finish, progress, report

HELP = "mIoU of label-mask PNGs against ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of predicted <stem>.png")
    parser.add_argument("--gt", required=True,
                        help="folder of ground-truth <stem>.png (0 background, id+1, 255 ignore)")
    parser.add_argument("--vocab", default="voc", help="voc, coco, a names file, or 'a,b,c'")
    parser.add_argument("--split", help="evaluate these stems (default: every PNG in --pred)")


def mask_stems(args: argparse.Namespace) -> list[str]:
    """The images to evaluate: the split's stems, or every PNG in the prediction folder."""
    if args.split:
        return [e.stem for e in dataset.read_split(args.split)]
    stems = sorted(f[:-len(".png")] for f in os.listdir(args.pred) if f.endswith(".png"))
    if not stems:
        raise ValueError(f"{args.pred} holds no .png masks")
    return stems


def add_mask_pair(matrix: metrics.ConfusionMatrix, pred_path: str, gt_path: str) -> str | None:
    """Add one prediction and its ground truth to `matrix`; the reason if they cannot be used."""
    for path in (pred_path, gt_path):
        if not os.path.isfile(path):
            return f"{path}: no such file"
    try:
        pred, gt = dataset.load_label_png(pred_path), dataset.load_label_png(gt_path)
    except (OSError, ValueError) as exc:
        return str(exc)
    if pred.shape != gt.shape:
        return (f"{pred_path}: mask is {pred.shape[1]}x{pred.shape[0]} pixels but its ground "
                f"truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
    try:
        matrix.update(pred, gt)
    except ValueError as exc:
        return f"{pred_path}: {exc}"
    return None


def run(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocab, "")
    names = ("background", *vocabulary.classes)
    matrix = metrics.ConfusionMatrix(len(names), dataset.IGNORE_LABEL)
    stems = mask_stems(args)
    failed = 0
    for stem in progress(stems, "evaluate"):
        problem = add_mask_pair(matrix, os.path.join(args.pred, stem + ".png"),
                                os.path.join(args.gt, stem + ".png"))
        if problem:
            failed += 1
            report(f"skipping {problem}")
    if failed == len(stems):
        print(f"error: none of the {len(stems)} masks could be evaluated", file=sys.stderr)
        return EXIT_SOME_FAILED
    miou = matrix.miou()
    print(metrics.format_table(names, {"IoU": matrix.iou()}, {"IoU": miou}))
    evaluated = len(stems) - failed
    print(f"mIoU {100 * miou:.2f} on {evaluated} image{'s' if evaluated != 1 else ''} "
          f"(classes absent from the ground truth are left out of the mean)")
    return finish(failed, len(stems), "could not be evaluated")
