"""Regions of tagged classes in a label mask, on constructed masks whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from tagclip_ros.core.detections import regions
from tagclip_ros.core.tags import Tag

CAT, DOG, CAR = Tag(0, "cat", 0.9), Tag(1, "dog", 0.7), Tag(2, "car", 0.5)  # ids 1, 2, 3


def scene() -> np.ndarray:
    """100×200: cat in two pieces (30×40 and 10×10), dog as two squares touching only at a
    corner (one 8-connected region), a 2-pixel car speck, background elsewhere."""
    mask = np.zeros((100, 200), np.uint16)
    mask[10:40, 20:60] = 1     # cat, 1200 px
    mask[80:90, 150:160] = 1   # cat, 100 px
    mask[50:60, 100:110] = 2   # dog
    mask[60:70, 110:120] = 2   # dog, diagonal neighbour of the square above
    mask[0, 199] = mask[1, 199] = 3  # car, 2 px = 0.0001 of the image
    return mask


def test_regions_per_tag_largest_first_with_boxes_ids_and_scores():
    found = regions(scene(), [CAT, DOG, CAR], min_area=0.001)
    assert [(r.id, r.class_id, r.score, r.area, r.box) for r in found] == [
        ("cat/0", 1, 0.9, 1200, (20, 10, 60, 40)),
        ("cat/1", 1, 0.9, 100, (150, 80, 160, 90)),
        ("dog/0", 2, 0.7, 200, (100, 50, 120, 70)),
    ]
    cat = found[0]
    assert cat.center == (39.5, 24.5) and cat.size == (40, 30)
    rows, cols = found[2].pixels()
    assert len(rows) == 200 and set(zip(rows.tolist(), cols.tolist())) == {
        (y, x) for y in range(50, 70) for x in range(100, 120)
        if (y < 60 and x < 110) or (y >= 60 and x >= 110)}


def test_min_area_is_a_share_of_the_image_and_tags_without_pixels_give_nothing():
    assert [r.id for r in regions(scene(), [CAR], min_area=0.0)] == ["car/0"]
    assert [r.id for r in regions(scene(), [CAR], min_area=0.0001)] == ["car/0"]  # 2 px ≥ 2 px
    assert regions(scene(), [CAR], min_area=0.00011) == []
    assert [r.id for r in regions(scene(), [CAT], min_area=0.006)] == ["cat/0"]  # 100 px < 120
    assert regions(scene(), [Tag(5, "bus", 0.4)]) == []
    assert regions(scene(), []) == []


def test_a_single_pixel_box_is_centred_on_that_pixel():
    mask = np.zeros((10, 10), np.uint8)
    mask[4, 3] = 1
    (only,) = regions(mask, [CAT], min_area=0.0)
    assert (only.box, only.center, only.size) == ((3, 4, 4, 5), (3.0, 4.0), (1, 1))


@pytest.mark.parametrize("min_area", [-0.1, 1.5])
def test_min_area_outside_0_1_is_refused(min_area):
    with pytest.raises(ValueError, match="fraction of the image"):
        regions(scene(), [CAT], min_area)
