"""Paper metrics on small cases whose answers are worked out by hand in the comments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tagclip_ros.core.metrics import (
    ConfusionMatrix, average_precision, f1_precision_recall, format_table, mean_average_precision,
    per_class_precision_recall,
    relative_threshold_predictions,
)

# ---------------------------------------------------------------- average precision / mAP


def test_perfect_ranking_gives_ap_one():
    # class 0 ranks 0.9(+) 0.7(+) 0.2(-): precisions at positives 1/1, 2/2 -> AP 1
    # class 1 ranks 0.8(+) 0.6(+) 0.1(-): likewise AP 1
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    np.testing.assert_allclose(average_precision(scores, labels), [1.0, 1.0])
    assert mean_average_precision(scores, labels) == pytest.approx(1.0)


def test_negative_ranked_first_lowers_ap():
    # ranking 0.9(-) 0.8(+) 0.3(+): precisions at positives 1/2 and 2/3 -> AP (1/2 + 2/3)/2 = 7/12
    scores = np.array([[0.9], [0.8], [0.3]])
    labels = np.array([[0], [1], [1]])
    assert average_precision(scores, labels)[0] == pytest.approx(7 / 12)


def test_tied_scores_take_precision_at_end_of_tie_and_ignore_image_order():
    # ranking 0.9(+) then the tie {0.5(-), 0.5(+)} then 0.1(-).
    # positive 1: precision 1/1. positive 2 sits in the tie, which ends at rank 3 with 2 hits:
    # precision 2/3. AP = (1 + 2/3)/2 = 5/6 whichever of the tied images comes first.
    scores = np.array([[0.9], [0.5], [0.5], [0.1]])
    labels = np.array([[1], [0], [1], [0]])
    assert average_precision(scores, labels)[0] == pytest.approx(5 / 6)
    swapped = [0, 2, 1, 3]
    assert average_precision(scores[swapped], labels[swapped])[0] == pytest.approx(5 / 6)


def test_class_without_positives_is_nan_and_counts_zero_in_official_map():
    # class 0: 0.8(+) 0.2(-) -> AP 1; class 1 has no positive -> NaN.
    # official (torch.mean over all classes, empty AP left at 0): (1 + 0)/2 = 0.5; skip: 1.0
    scores = np.array([[0.8, 0.3], [0.2, 0.9]])
    labels = np.array([[1, 0], [0, 0]])
    ap = average_precision(scores, labels)
    assert ap[0] == pytest.approx(1.0) and math.isnan(ap[1])
    assert mean_average_precision(scores, labels) == pytest.approx(0.5)
    assert mean_average_precision(scores, labels, empty="skip") == pytest.approx(1.0)


def test_no_positive_anywhere():
    # official mean of all-zero APs is 0; skipping every class leaves nothing to average
    scores, labels = np.array([[0.8, 0.3]]), np.zeros((1, 2))
    assert mean_average_precision(scores, labels) == 0.0
    assert math.isnan(mean_average_precision(scores, labels, empty="skip"))


@pytest.mark.parametrize("scores, labels, reason", [
    (np.zeros((2, 3)), np.zeros((2, 2)), "do not match"),
    (np.zeros(3), np.zeros(3), "2-D"),
    (np.array([[np.nan, 0.1]]), np.zeros((1, 2)), "NaN"),
])
def test_bad_ap_input_is_rejected(scores, labels, reason):
    with pytest.raises(ValueError, match=reason):
        average_precision(scores, labels)


def test_unknown_empty_mode_is_rejected():
    with pytest.raises(ValueError, match="'zero' or 'skip'"):
        mean_average_precision(np.ones((1, 1)), np.ones((1, 1)), empty="drop")

# ---------------------------------------------------------------- relative threshold and F1


def test_relative_threshold_is_strict_and_per_image():
    # row 0: 0.1 + 0.5*(0.9-0.1) = 0.5; 0.5 is not > 0.5, only 0.9 passes
    # row 1: 2 + 0.5*(10-2) = 6; 10 and 7 pass, 2 does not
    scores = np.array([[0.1, 0.5, 0.9], [10.0, 2.0, 7.0]])
    np.testing.assert_array_equal(relative_threshold_predictions(scores),
                                  [[False, False, True], [True, False, True]])
    # factor 0.1, row 0: 0.1 + 0.08 = 0.18 -> 0.5 and 0.9 pass
    np.testing.assert_array_equal(relative_threshold_predictions(scores[:1], 0.1), [[False, True, True]])


def test_equal_scores_predict_nothing_without_fallback():
    # max == min -> threshold = the score itself, nothing is strictly above it
    np.testing.assert_array_equal(relative_threshold_predictions(np.full((1, 3), 0.3)), [[False] * 3])


def test_factor_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="factor"):
        relative_threshold_predictions(np.ones((1, 2)), 1.5)


def test_perfect_predictions_give_f1_one():
    # predicted sets {0} and {1, 2} equal the labels: TP 3, FP 0, FN 0
    scores = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.9]])
    labels = np.array([[1, 0, 0], [0, 1, 1]])
    assert f1_precision_recall(scores, labels) == pytest.approx((1.0, 1.0, 1.0))


def test_overall_f1_pools_counts_over_images():
    # image 0: threshold 0 + 0.5*0.9 = 0.45 -> predicts {0, 1}; labels {0}: TP 1, FP 1
    # image 1: threshold 0 + 0.5*1.0 = 0.5  -> predicts {2};    labels {0, 1, 2}: TP 1, FN 2
    # pooled TP 2, FP 1, FN 2: P = 2/3, R = 2/4 = 1/2, F1 = 2*(2/3)*(1/2)/(2/3 + 1/2) = 4/7
    # (per-image averaging would give P = (1/2 + 1)/2 = 3/4 instead)
    scores = np.array([[0.9, 0.8, 0.0], [0.2, 0.0, 1.0]])
    labels = np.array([[1, 0, 0], [1, 1, 1]])
    f1, precision, recall = f1_precision_recall(scores, labels)
    assert (f1, precision, recall) == pytest.approx((4 / 7, 2 / 3, 1 / 2))


def test_one_wrong_class():
    # predicts {1} (threshold 0.5), label {0}: TP 0, FP 1, FN 1 -> P = R = 0, F1 0 (official: NaN)
    scores, labels = np.array([[0.0, 1.0]]), np.array([[1, 0]])
    assert f1_precision_recall(scores, labels) == (0.0, 0.0, 0.0)


def test_empty_predictions_give_zero_not_nan():
    # constant scores predict nothing: TP 0, FP 0, FN 2 -> P 0 (0/0 guarded), R 0, F1 0
    scores, labels = np.full((2, 2), 0.4), np.array([[1, 0], [0, 1]])
    assert f1_precision_recall(scores, labels) == (0.0, 0.0, 0.0)


def test_f1_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="do not match"):
        f1_precision_recall(np.zeros((2, 3)), np.zeros((3, 2)))

# ---------------------------------------------------------------- confusion matrix / mIoU


def test_perfect_masks_give_miou_one():
    gt = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(gt.copy(), gt)
    np.testing.assert_allclose(cm.iou(), [1.0, 1.0, 1.0])
    assert cm.miou() == pytest.approx(1.0)


def test_iou_by_hand_background_included():
    # pixel pairs (gt -> pred): 0->0, 0->1, 1->1, 1->1, 2->2, 2->0
    # matrix rows gt: [[1,1,0],[0,2,0],[1,0,1]]; diag 1,2,1; gt sums 2,2,2; pred sums 2,3,1
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 1/(2+1-1) = 1/2; mean 1.5/3 = 0.5
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx(0.5)


def test_matrix_is_pooled_over_images_not_averaged():
    # image A: 4 pixels gt 0 pred 0; image B: gt [1, 1] pred [1, 0]
    # pooled matrix [[4,0],[1,1]]: IoU0 = 4/(4+5-4) = 4/5, IoU1 = 1/(2+1-1) = 1/2 -> mean 0.65
    # (mean of per-image mIoUs would be (1 + 1/2)/2 = 0.75)
    cm = ConfusionMatrix(2)
    cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    cm.update(np.array([1, 0]), np.array([1, 1]))
    assert cm.miou() == pytest.approx(0.65)


def test_ignore_label_pixels_are_left_out():
    # the two 255 pixels are predicted 1 and 0; without them the matrix is [[1,0],[0,1]] -> 1.0
    gt = np.array([[0, 255], [1, 255]], dtype=np.uint8)
    pred = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    assert cm.matrix.sum() == 2
    assert cm.miou() == pytest.approx(1.0)


def test_custom_ignore_index():
    # ignore_index 0: only the gt-1 pixel counts, predicted 1 -> IoU1 = 1; class 0 absent -> NaN
    cm = ConfusionMatrix(2, ignore_index=0)
    cm.update(np.array([1, 1]), np.array([0, 1]))
    np.testing.assert_array_equal(cm.matrix, [[0, 0], [0, 1]])
    assert math.isnan(cm.iou()[0]) and cm.miou() == pytest.approx(1.0)


def test_class_predicted_but_absent_from_ground_truth_is_left_out_of_the_mean():
    # pairs (gt -> pred): 0->0, 0->2, 1->1, 1->1; class 2 never in gt
    # IoU0 = 1/(2+1-1) = 1/2, IoU1 = 2/(2+2-2) = 1, IoU2 = 0/(0+1-0) = 0
    # official mean over gt-present classes {0, 1}: (1/2 + 1)/2 = 0.75 (counting class 2: 0.5)
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2, 1, 1]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(cm.iou(), [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(cm.present(), [True, True, False])
    assert cm.miou() == pytest.approx(0.75)


def test_class_absent_from_both_is_nan_and_skipped():
    # class 2 neither in gt nor predicted: 0/0 -> NaN; mean over {0, 1} = (1 + 1)/2
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    assert math.isnan(cm.iou()[2])
    assert cm.miou() == pytest.approx(1.0)


def test_no_pixels_gives_nan_miou():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0]), np.array([255]))
    assert math.isnan(cm.miou())


def test_mismatched_mask_shape_is_rejected():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3\) does not match ground truth of shape \(3, 2\)"):
        cm.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    assert cm.matrix.sum() == 0


@pytest.mark.parametrize("pred, gt, reason", [
    (np.array([0, 3]), np.array([0, 1]), "mask holds class id 3"),
    (np.array([0, 1]), np.array([0, 7]), "ground truth holds class id 7"),
    (np.array([0.0, 1.0]), np.array([0, 1]), "integer"),
])
def test_out_of_range_or_float_ids_are_rejected(pred, gt, reason):
    with pytest.raises(ValueError, match=reason):
        ConfusionMatrix(3).update(pred, gt)

# ---------------------------------------------------------------- table


def test_format_table_layout_and_mean_row():
    # AP mean (1 + 0.5)/2 = 75 %; IoU nan-mean over {0.25} = 25 %, NaN prints "-"
    table = format_table(["cat", "dog"], {"AP": np.array([1.0, 0.5]), "IoU": np.array([0.25, np.nan])})
    assert table.splitlines() == [
        "class     AP   IoU",
        "------------------",
        "cat   100.00 25.00",
        "dog    50.00     -",
        "------------------",
        "mean   75.00 25.00",
    ]


def test_format_table_uses_given_means():
    # official mAP with an absent class would be given explicitly, e.g. 0.125 -> 12.50
    table = format_table(["cat", "dog"], {"AP": np.array([0.25, np.nan])}, means={"AP": 0.125})
    assert table.splitlines()[-1].split() == ["mean", "12.50"]


def test_format_table_rejects_wrong_column_length():
    with pytest.raises(ValueError, match="has 3 values for 2 class names"):
        format_table(["cat", "dog"], {"AP": np.zeros(3)})


def test_per_class_precision_recall_counts_by_hand():
    predicted = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    labels = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    result = per_class_precision_recall(predicted, labels)
    # class 0: TP 1, FP 1, FN 1; class 1: TP 1, FP 1, FN 0; class 2: never predicted or present
    np.testing.assert_allclose(result["P"], [0.5, 0.5, np.nan])
    np.testing.assert_allclose(result["R"], [0.5, 1.0, np.nan])
    np.testing.assert_allclose(result["F1"], [0.5, 2 / 3, np.nan])

