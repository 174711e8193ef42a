"""COCO-Stuff tables against the official code: names from classify.py's output, the 182 -> 171
rule, and the 182 -> 27 numbers of CLIP-ES eval_cam_cocostuff.py, held here literally."""
from __future__ import annotations

import numpy as np
import pytest

from tagclip_ros.core.cocostuff import (
    COARSE_CLASSES, COARSE_HIERARCHY, COCO_STUFF_CLASSES, FINE171_TO_COARSE, FINE182_CLASSES,
    GT182_TO_171, GT182_TO_COARSE, IGNORE, REMOVED_182_IDS, gt_ids_to_171,
)

from ..conftest import reference_scores

# The official list of unused COCO-Stuff ids, 1-based (classify.py; the 182-ids in PNGs are these - 1).
OFFICIAL_REMOVED_1BASED = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)

# eval_cam_cocostuff.py's fine_to_coarse_dic values, for 0-based 182-ids 0..181 in order.
OFFICIAL_FINE_TO_COARSE = (
    9, 11, 11, 11, 11, 11, 11, 11, 11, 8, 8, 8, 8, 8, 8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    6, 6, 6, 6, 6, 6, 6, 6, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 5, 5, 5, 5, 5, 5, 5, 5,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1,
    4, 4, 4, 4, 4, 4, 4, 4, 17, 17, 22, 20, 20, 22, 15, 25, 16, 13, 12, 12, 17, 17, 23, 15,
    15, 17, 15, 21, 15, 25, 13, 13, 13, 13, 13, 22, 26, 14, 14, 15, 22, 21, 21, 24,
    20, 22, 15, 17, 16, 15, 22, 24, 21, 17, 25, 16, 21, 17, 22, 16, 21, 21, 25, 21,
    26, 21, 24, 20, 17, 14, 21, 26, 15, 23, 20, 21, 24, 15, 24, 22, 25, 15, 20, 17,
    17, 22, 14, 18, 18, 18, 18, 18, 18, 18, 26, 26, 19, 19, 24,
)


def _official_182_to_171() -> dict[int, int]:
    """classify.py's rule: walk 0..181, skip id where id + 1 is in the removed list, count."""
    table, cnt = {}, 0
    for fid in range(182):
        if fid + 1 in OFFICIAL_REMOVED_1BASED:
            continue
        table[fid] = cnt
        cnt += 1
    return table


def test_171_names_are_the_official_classify_output():
    assert list(COCO_STUFF_CLASSES) == reference_scores("cocostuff")["classes"]
    assert len(FINE182_CLASSES) == 182 and len(set(FINE182_CLASSES)) == 182
    assert {"motorcycle", "airplane"} <= set(COCO_STUFF_CLASSES)
    assert not {"motorbike", "aeroplane"} & set(COCO_STUFF_CLASSES)


def test_removed_ids_are_the_official_list():
    assert sorted(REMOVED_182_IDS) == [k - 1 for k in OFFICIAL_REMOVED_1BASED]


def test_182_to_171_follows_the_official_rule():
    official = _official_182_to_171()
    expected = np.full(256, 255, dtype=np.uint8)
    for fid, idx in official.items():
        expected[fid] = idx
    assert GT182_TO_171.dtype == np.uint8 and GT182_TO_171.shape == (256,)
    np.testing.assert_array_equal(GT182_TO_171, expected)
    # and each kept id's name is the 171-class name it maps to
    for fid, idx in official.items():
        assert FINE182_CLASSES[fid] == COCO_STUFF_CLASSES[idx]


def test_182_to_27_is_the_official_fine_to_coarse():
    assert len(OFFICIAL_FINE_TO_COARSE) == 182
    expected = np.array(list(OFFICIAL_FINE_TO_COARSE) + [255] * (256 - 182), dtype=np.uint8)
    assert GT182_TO_COARSE.dtype == np.uint8 and GT182_TO_COARSE.shape == (256,)
    np.testing.assert_array_equal(GT182_TO_COARSE, expected)


def test_171_to_27_is_the_official_derivation():
    coarse171 = [c for fid, c in enumerate(OFFICIAL_FINE_TO_COARSE) if fid + 1 not in OFFICIAL_REMOVED_1BASED]
    expected = np.array(coarse171 + [255] * (256 - 171), dtype=np.uint8)
    assert FINE171_TO_COARSE.dtype == np.uint8 and FINE171_TO_COARSE.shape == (256,)
    np.testing.assert_array_equal(FINE171_TO_COARSE, expected)


def test_ignore_maps_to_ignore_and_tables_are_read_only():
    assert IGNORE == 255
    for table in (GT182_TO_171, FINE171_TO_COARSE, GT182_TO_COARSE):
        assert table[255] == 255
        with pytest.raises(ValueError):
            table[0] = 1


def test_kept_ids_map_one_to_one_onto_171_indices():
    kept = [fid for fid in range(182) if fid not in REMOVED_182_IDS]
    assert len(kept) == 171
    assert sorted(GT182_TO_171[kept].tolist()) == list(range(171))
    assert (GT182_TO_171[list(REMOVED_182_IDS)] == 255).all()
    assert (GT182_TO_171[182:] == 255).all()


def test_every_coarse_id_is_used_and_names_line_up():
    assert len(COARSE_CLASSES) == 27 and len(set(COARSE_CLASSES)) == 27
    assert set(FINE171_TO_COARSE[:171].tolist()) == set(range(27))
    assert set(GT182_TO_COARSE[:182].tolist()) == set(range(27))
    assert COARSE_CLASSES[9] == "person" and COARSE_CLASSES[11] == "vehicle"
    assert COARSE_CLASSES[12] == "ceiling" and COARSE_CLASSES[26] == "water"
    assert sum(len(m) for m in COARSE_HIERARCHY.values()) == 182


def test_182_to_27_commutes_with_182_to_171():
    kept = np.array([fid for fid in range(182) if fid not in REMOVED_182_IDS])
    np.testing.assert_array_equal(FINE171_TO_COARSE[GT182_TO_171[kept]], GT182_TO_COARSE[kept])


def test_a_label_png_maps_through_the_lookups():
    gt = np.array([[0, 11, 181], [255, 91, 90]], dtype=np.uint8)   # person, street sign, wood; ...
    np.testing.assert_array_equal(GT182_TO_171[gt], [[0, 255, 170], [255, 80, 255]])
    np.testing.assert_array_equal(GT182_TO_COARSE[gt], [[9, 8, 24], [255, 17, 4]])


def test_gt_line_drops_removed_ids_sorts_and_dedups():
    # 0 person, 11 street sign (removed), 90 hair brush (removed), 181 wood, 91 banner
    assert gt_ids_to_171([181, 0, 11, 91, 90, 0]) == [0, 80, 170]
    assert gt_ids_to_171(["2", "7", "12", "255"]) == [2, 7, 11]
    assert gt_ids_to_171([]) == []
    assert gt_ids_to_171(np.array([44, 43], dtype=np.uint8)) == [39]


@pytest.mark.parametrize("bad", [-1, 182, 254, 256])
def test_gt_line_rejects_ids_outside_182(bad):
    with pytest.raises(ValueError, match="182-id"):
        gt_ids_to_171([0, bad])
