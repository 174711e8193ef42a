"""3D boxes from depth on constructed scenes: planes at known depths, a known pinhole camera."""
from __future__ import annotations

import numpy as np
import pytest

from tagclip_ros.core.depth import (DepthError, Intrinsics, aligned, depth_metres, region_box,
                                    region_boxes)
from tagclip_ros.core.detections import regions
from tagclip_ros.core.tags import Tag

HEIGHT, WIDTH = 240, 320
CAMERA = Intrinsics(fx=300.0, fy=310.0, cx=159.5, cy=119.5)
BOX, PLANE = Tag(0, "box", 0.8), Tag(1, "plane", 0.6)


def scene(encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """A label mask and depth: a box (rows 60–99, cols 200–259) on a fronto-parallel plane at
    1.5 m, the rest of the image a second class at 4 m."""
    mask = np.full((HEIGHT, WIDTH), 2, np.uint8)
    mask[60:100, 200:260] = 1
    metres = np.full((HEIGHT, WIDTH), 4.0, np.float32)
    metres[60:100, 200:260] = 1.5
    depth = (metres * 1000).astype(np.uint16) if encoding == "16UC1" else metres
    return mask, depth


def truth(rows: tuple[int, int], cols: tuple[int, int], z: float) -> np.ndarray:
    """The centre of the plane patch seen by pixels rows × cols (end-exclusive) at depth z."""
    v, u = (rows[0] + rows[1] - 1) / 2, (cols[0] + cols[1] - 1) / 2
    return np.array([(u - CAMERA.cx) * z / CAMERA.fx, (v - CAMERA.cy) * z / CAMERA.fy, z])


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_centres_lie_within_a_centimetre_of_the_truth(encoding):
    mask, depth = scene(encoding)
    found = regions(mask, [BOX, PLANE])
    boxes = dict((r.id, b) for r, b in region_boxes(found, depth, CAMERA, (HEIGHT, WIDTH)))
    assert sorted(boxes) == ["box/0", "plane/0"]
    box = boxes["box/0"]
    assert np.abs(np.array(box.center) - truth((60, 100), (200, 260), 1.5)).max() < 0.01
    # 5th–95th percentile of a uniform spread: 90% of the patch's width and height, no depth
    width_m, height_m = 60 * 1.5 / CAMERA.fx, 40 * 1.5 / CAMERA.fy
    assert np.abs(np.array(box.size) - [0.9 * width_m, 0.9 * height_m, 0.0]).max() < 0.01
    assert box.points == 2400
    assert abs(boxes["plane/0"].center[2] - 4.0) < 0.01


def test_a_rim_of_background_depth_moves_the_centre_less_than_a_centimetre():
    mask, depth = scene("32FC1")
    mask[59, 200:260] = 1  # the box's mask spills one row onto the 4 m plane (2.4% of it)
    (box, measured), = region_boxes(regions(mask, [BOX]), depth, CAMERA, (HEIGHT, WIDTH))
    assert np.abs(np.array(measured.center) - truth((60, 100), (200, 260), 1.5)).max() < 0.01


def test_half_resolution_depth_of_the_same_view_is_scaled():
    mask, depth = scene("16UC1")
    half = depth[::2, ::2].copy()
    full = region_boxes(regions(mask, [BOX]), depth, CAMERA, (HEIGHT, WIDTH))[0][1]
    scaled = region_boxes(regions(mask, [BOX]), half, CAMERA, (HEIGHT, WIDTH))[0][1]
    assert np.abs(np.array(scaled.center) - full.center).max() < 0.01


def test_too_few_valid_points_give_no_box_and_invalid_depths_are_ignored():
    mask, depth = scene("32FC1")
    depth[60:100, 200:259] = np.nan  # one column of 40 valid pixels left
    (region,) = regions(mask, [BOX])
    assert region_box(region, depth_metres(depth), CAMERA, min_points=50) is None
    kept = region_box(region, depth_metres(depth), CAMERA, min_points=40)
    assert kept is not None and kept.points == 40
    for bad in (0.0, -1.0, np.inf):
        depth[60:100, 200:259] = bad
        assert region_box(region, depth_metres(depth), CAMERA, min_points=41) is None


@pytest.mark.parametrize("depth, words", [
    (np.zeros((HEIGHT, WIDTH), np.uint16), "no valid pixel"),
    (np.full((HEIGHT, WIDTH), np.nan, np.float32), "no valid pixel"),
    (np.ones((HEIGHT, 2 * WIDTH), np.uint16), "another aspect ratio"),
    (np.ones((HEIGHT, WIDTH), np.uint8), "uint16 millimetres or float32 metres"),
    (np.ones((HEIGHT, WIDTH, 3), np.float32), "one channel"),
], ids=["all zero", "all NaN", "other aspect", "8-bit", "three channels"])
def test_a_depth_image_that_cannot_serve_the_frame_is_one_sentence(depth, words):
    mask, _ = scene("16UC1")
    with pytest.raises(DepthError, match=words):
        region_boxes(regions(mask, [BOX]), depth, CAMERA, (HEIGHT, WIDTH))


def test_intrinsics_from_camera_info_scale_to_the_image():
    k = [600.0, 0, 319.5, 0, 620.0, 239.5, 0, 0, 1]
    assert Intrinsics.from_k(k, (480, 640), (480, 640)) == Intrinsics(600.0, 620.0, 319.5, 239.5)
    assert Intrinsics.from_k(k, (0, 0), (240, 320)) == Intrinsics(600.0, 620.0, 319.5, 239.5)
    assert Intrinsics.from_k(k, (480, 640), (240, 320)) == CAMERA
    with pytest.raises(DepthError, match="focal length"):
        Intrinsics.from_k([0.0] * 9, (480, 640), (480, 640))


def test_aligned_keeps_an_image_sized_depth_as_it_is():
    metres = depth_metres(scene("32FC1")[1])
    assert aligned(metres, (HEIGHT, WIDTH)) is metres
