"""`tagclip evaluate-masks`: mIoU of label-mask PNGs against ground truth (the paper's protocol),
in each class set of the dataset profile (COCO-Stuff: its 171 classes and the paper's 27)."""
from __future__ import annotations

import argparse
import os
import sys

from ..core import dataset, metrics
from ..core.dataset_profiles import MaskEvaluation, resolve_profile
from .common import EXIT_SOME_FAILED, add_vocab_argument, finish, progress, report

HELP = "mIoU of label-mask PNGs against ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of predicted <stem>.png")
    parser.add_argument("--gt", required=True,
                        help="folder of ground-truth <stem>.png (0 background, id+1, 255 ignore; "
                             "cocostuff: the dataset's 0-based 182-ids, 255 unlabelled)")
    add_vocab_argument(parser)
    parser.add_argument("--split", help="evaluate these stems (default: every PNG in --pred)")


def mask_stems(args: argparse.Namespace) -> list[str]:
    """The images to evaluate: the split's stems, or every PNG in the prediction folder."""
    if args.split:
        return [e.stem for e in dataset.read_split(args.split)]
    stems = sorted(f[:-len(".png")] for f in os.listdir(args.pred) if f.endswith(".png"))
    if not stems:
        raise ValueError(f"{args.pred} holds no .png masks")
    return stems


def add_mask_pair(matrices: list[tuple[MaskEvaluation, metrics.ConfusionMatrix]], pred_path: str,
                  gt_path: str) -> str | None:
    """Add one prediction and its ground truth to every class set's matrix; the reason if they
    cannot be used (then no matrix counts them)."""
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
    pairs = [(evaluation.prediction(pred), evaluation.ground_truth(gt)) for evaluation, _ in matrices]
    try:
        for (_, matrix), (p, g) in zip(matrices, pairs):
            metrics.ConfusionMatrix(matrix.num_classes, matrix.ignore_index).update(p, g)  # check first
    except ValueError as exc:
        return f"{pred_path}: {exc}"
    for (_, matrix), (p, g) in zip(matrices, pairs):
        matrix.update(p, g)
    return None


def run(args: argparse.Namespace) -> int:
    evaluations = resolve_profile(args.vocab, "").evaluations()
    matrices = [(e, metrics.ConfusionMatrix(len(e.names), dataset.IGNORE_LABEL)) for e in evaluations]
    stems = mask_stems(args)
    failed = 0
    for stem in progress(stems, "evaluate"):
        problem = add_mask_pair(matrices, os.path.join(args.pred, stem + ".png"),
                                os.path.join(args.gt, stem + ".png"))
        if problem:
            failed += 1
            report(f"skipping {problem}")
    if failed == len(stems):
        print(f"error: none of the {len(stems)} masks could be evaluated", file=sys.stderr)
        return EXIT_SOME_FAILED
    evaluated = len(stems) - failed
    for evaluation, matrix in matrices:
        if len(matrices) > 1:
            print(f"{evaluation.title}:")
        print(metrics.format_table(evaluation.names, {"IoU": matrix.iou()}, {"IoU": matrix.miou()}))
    for evaluation, matrix in matrices:
        title = f" ({evaluation.title})" if len(matrices) > 1 else ""
        print(f"mIoU {100 * matrix.miou():.2f}{title} on {evaluated} image{'s' if evaluated != 1 else ''} "
              f"(classes absent from the ground truth are left out of the mean)")
    return finish(failed, len(stems), "could not be evaluated")
