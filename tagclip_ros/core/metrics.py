"""Evaluation metrics of the TagCLIP paper: mAP, overall F1 at the relative threshold, and mIoU.

Plain numpy, no ROS and no torch, so the benchmarks and the tests can score results anywhere.
Each function follows the official TagCLIP protocol (`utils.compute_AP`, `utils.compute_F1` in
'overall' mode as `classify.py` calls them, and CLIP-ES `eval_cam.scores` for mIoU); where that
code leaves a case undefined or degenerate the docstring says what is done here instead.
"""
from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

import numpy as np

__all__ = [
    "ConfusionMatrix", "average_precision", "f1_precision_recall", "format_table",
    "mean_average_precision", "relative_threshold_predictions",
]


def _score_label_pair(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates an (images, classes) score matrix and its 0/1 labels; returns float, bool."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (images, classes) array, got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match scores of shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values; they cannot be ranked")
    return scores, labels > 0


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class average precision over images ranked by score, NaN for classes without positives.

    As the official `compute_AP`: AP = mean, over the positive images, of the precision at the
    rank of each positive (no interpolation). The official code sorts with `torch.sort`, whose
    order among equal scores is unspecified, so tied scores give run-dependent AP there. Here tied
    images are taken together: each positive in a tie gets the precision at the end of its tie
    group, which does not depend on image order and equals the official value when no scores tie.
    """
    scores, positive = _score_label_pair(scores, labels)
    ap = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        num_pos = int(positive[:, c].sum())
        if num_pos == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        ranked = -scores[order, c]                      # ascending, so searchsorted works
        hits = positive[order, c]
        true_pos = np.cumsum(hits)
        group_end = np.searchsorted(ranked, ranked, side="right") - 1
        precision = true_pos[group_end] / (group_end + 1)
        ap[c] = precision[hits].sum() / num_pos
    return ap


def mean_average_precision(scores: np.ndarray, labels: np.ndarray,
                           empty: Literal["zero", "skip"] = "zero") -> float:
    """Mean of `average_precision` over classes; `empty` says what classes without positives count.

    "zero" (default) is the official protocol: `compute_AP` leaves AP 0 for such classes and
    `classify.py` prints `torch.mean(ap)` over all classes, so they pull the mean down. "skip"
    averages only classes with positives, which is what to use on a subset of a test set where
    some classes never occur. On the paper's full VOC/COCO test sets every class occurs and the
    two agree. With no positive at all, "zero" gives 0.0 (as the official code) and "skip" NaN.
    """
    ap = average_precision(scores, labels)
    if empty == "zero":
        return float(np.nan_to_num(ap, nan=0.0).mean()) if ap.size else math.nan
    if empty == "skip":
        present = ap[~np.isnan(ap)]
        return float(present.mean()) if present.size else math.nan
    raise ValueError(f"empty must be 'zero' or 'skip', got {empty!r}")


def relative_threshold_predictions(scores: np.ndarray, factor: float = 0.5) -> np.ndarray:
    """Boolean predictions: a class is predicted when score > min + factor·(max − min) of its image.

    The last axis holds the classes (one row per image). As in the official F1 there is no
    fallback: an image whose scores are all equal predicts nothing (the published tag list,
    `relative_threshold_tags`, adds the top class in that case; the F1 protocol does not).
    """
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"factor must lie in [0, 1], got {factor}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 0 or scores.shape[-1] == 0:
        raise ValueError(f"scores need at least one class on their last axis, got shape {scores.shape}")
    low = scores.min(axis=-1, keepdims=True)
    high = scores.max(axis=-1, keepdims=True)
    return scores > low + factor * (high - low)


def f1_precision_recall(scores: np.ndarray, labels: np.ndarray,
                        factor: float = 0.5) -> tuple[float, float, float]:
    """Overall F1, precision and recall of the relative-threshold predictions (paper: VOC/COCO 0.5,
    COCO-Stuff 0.1).

    'overall' mode as the official `compute_F1`: true/false positives and false negatives are
    pooled over all images and classes before P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R).
    Differences from that code, all in degenerate cases: it adds 1e-9 to the denominators (values
    here differ by less than 1e-9); with no true positive it returns F1 = 0/0 = NaN, here 0.0;
    and its in-place binarisation zeroes every prediction when the threshold is ≥ 1 (only
    possible for scores above 1, never for TagCLIP's probabilities), here the rule stays score >
    threshold.
    """
    scores, positive = _score_label_pair(scores, labels)
    predicted = relative_threshold_predictions(scores, factor)
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


class ConfusionMatrix:
    """Pixel confusion matrix pooled over all images (rows: ground truth, columns: prediction).

    As CLIP-ES `eval_cam.scores`: one matrix over the whole set (not a mean of per-image
    scores), background (class 0) counted as a class, ground-truth pixels equal to
    `ignore_index` (255, the VOC object borders) left out whatever was predicted there.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Adds one image: a predicted label mask and its ground truth, same shape, integer ids.

        The official code silently drops any ground truth outside [0, num_classes) and
        miscounts or crashes on predictions outside it; here such values (other than the
        ignore label) raise ValueError, since they mean a wrong class count or a broken mask.
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"mask of shape {pred.shape} does not match ground truth of shape {gt.shape}")
        for name, mask in (("mask", pred), ("ground truth", gt)):
            if mask.size and not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
                raise ValueError(f"{name} must hold integer class ids, got dtype {mask.dtype}")
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        n = self.num_classes
        for name, ids in (("ground truth", gt), ("mask", pred)):
            bad = (ids < 0) | (ids >= n)
            if bad.any():
                raise ValueError(f"{name} holds class id {int(ids[bad][0])}, outside [0, {n}) "
                                 f"and not the ignore label {self.ignore_index}")
        self.matrix += np.bincount(n * gt + pred, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (GT + predicted − TP); NaN for a class absent from both.

        A class predicted but absent from the ground truth gets 0 here (as the official
        per-class dict) yet is left out of `miou`.
        """
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def present(self) -> np.ndarray:
        """Classes with at least one ground-truth pixel: the ones `miou` averages."""
        return self.matrix.sum(axis=1) > 0

    def miou(self) -> float:
        """Mean IoU over classes present in the ground truth, background included; NaN if none.

        This is the official `nanmean(iu[hist.sum(axis=1) > 0])`: classes never in the ground
        truth are skipped even when predicted (those false positives still lower the IoU of the
        classes whose pixels they took).
        """
        present = self.present()
        return float(self.iou()[present].mean()) if present.any() else math.nan


def format_table(names: Sequence[str], values: Mapping[str, np.ndarray],
                 means: Mapping[str, float] | None = None) -> str:
    """Per-class table: class name, one column per metric in percent (2 decimals), a mean row.

    The mean row is the NaN-ignoring mean of each column unless `means` gives the value, which
    is how to show the official protocol's mean (e.g. `mean_average_precision(...)` counting
    absent classes as 0, or `ConfusionMatrix.miou()` skipping classes absent from the ground
    truth). NaN cells print as "-".
    """
    columns = {key: np.asarray(col, dtype=np.float64).ravel() for key, col in values.items()}
    for key, col in columns.items():
        if col.size != len(names):
            raise ValueError(f"column {key!r} has {col.size} values for {len(names)} class names")
    means = dict(means or {})

    def cell(value: float) -> str:
        return "-" if math.isnan(value) else f"{100.0 * value:.2f}"

    def column_mean(key: str) -> float:
        if key in means:
            return float(means[key])
        col = columns[key]
        return float(col[~np.isnan(col)].mean()) if (~np.isnan(col)).any() else math.nan

    rows = [["class", *columns]]
    rows += [[name, *(cell(col[i]) for col in columns.values())] for i, name in enumerate(names)]
    rows.append(["mean", *(cell(column_mean(key)) for key in columns)])
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    lines = [" ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:])])
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def per_class_precision_recall(predicted: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class F1, precision and recall of boolean predictions against 0/1 labels (images,
    classes); NaN where a ratio has no denominator (class never predicted / never present)."""
    positive = np.asarray(labels) > 0
    tp = (predicted & positive).sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / predicted.sum(axis=0)
        recall = tp / positive.sum(axis=0)
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), np.nan)
    f1 = np.where((tp == 0) & (predicted.sum(axis=0) + positive.sum(axis=0) > 0), 0.0, f1)
    return {"F1": f1, "P": precision, "R": recall}
