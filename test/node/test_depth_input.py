"""Depth images and CameraInfo messages as core/depth.py takes them (the node over DDS:
test_detections_3d.py)."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from tagclip_ros.core.depth import DepthError, Intrinsics
from tagclip_ros.node.depth_input import SkipWarnings, depth_to_array, intrinsics


def depth_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """A depth message of `pixels` with `pad` bytes after each row."""
    data = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = data.view(np.uint8).reshape(pixels.shape[0], -1)
    rows = np.concatenate([rows, np.full((rows.shape[0], pad), 7, np.uint8)], axis=1)
    return Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                 is_bigendian=int(bigendian), step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize("encoding, dtype, bigendian", [
    ("16UC1", np.uint16, False), ("mono16", np.uint16, True), ("32FC1", np.float32, False),
    ("32FC1", np.float32, True)])
def test_depth_pixels_come_back_as_sent_whatever_the_row_padding_and_byte_order(
        encoding, dtype, bigendian):
    pixels = (np.arange(12 * 5).reshape(5, 12) * 37).astype(dtype)
    for pad in (0, 6):
        got = depth_to_array(depth_image(pixels, encoding, pad, bigendian))
        assert got.dtype == dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("msg, words", [
    (depth_image(np.zeros((4, 4), np.uint8), "mono8"), "depth encoding 'mono8' is none of 16UC1"),
    (depth_image(np.zeros((4, 4), np.float64), "64FC1"), "depth encoding '64FC1'"),
    (Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(31)),
     "the 4x4 depth image's data holds 31 bytes but 16UC1 needs step × 4 rows = 32"),
    (Image(height=4, width=4, encoding="16UC1", step=6, data=bytes(32)), "step 6"),
    (Image(height=0, width=4, encoding="32FC1", step=16), "depth image is empty"),
], ids=["mono8", "64-bit", "short data", "short step", "empty"])
def test_an_unusable_depth_message_is_one_sentence(msg, words):
    with pytest.raises(DepthError, match=words):
        depth_to_array(msg)


def test_camera_info_gives_the_intrinsics_at_the_colour_images_size():
    info = CameraInfo(height=240, width=320, k=[300.0, 0.0, 159.5, 0.0, 310.0, 119.5, 0.0, 0.0, 1.0])
    assert intrinsics(info, (240, 320)) == Intrinsics(300.0, 310.0, 159.5, 119.5)
    assert intrinsics(info, (120, 160)) == Intrinsics(150.0, 155.0, 79.5, 59.5)


def test_each_kind_of_skip_reason_is_logged_at_once_and_the_same_kind_once_per_period():
    now = [0.0]
    warnings = SkipWarnings(5.0, lambda: now[0])
    assert warnings.due("no depth image within 0.05 s of the frame (the nearest is 0.200 s away)")
    assert not warnings.due("no depth image within 0.05 s of the frame (the nearest is 0.310 s away)")
    assert warnings.due("no camera_info has arrived yet")
    now[0] = 4.9
    assert not warnings.due("no camera_info has arrived yet")
    now[0] = 5.0
    assert warnings.due("no camera_info has arrived yet")
    assert warnings.due("no depth image within 0.05 s of the frame (none has arrived)")
