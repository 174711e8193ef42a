"""Message conversion: every common encoding decodes to the same RGB; bad frames say why."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Classification, LabelInfo

from tagclip_ros.core import BUILTIN
from tagclip_ros.core.tags import TagResult, relative_threshold_tags
from tagclip_ros.node import conversions
from tagclip_ros.node.conversions import FrameError

RGB = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def image(array: np.ndarray, encoding: str, step: int | None = None, pad: int = 0,
          bigendian: bool = False) -> Image:
    rows = array.reshape(array.shape[0], -1).view(np.uint8)
    if pad:
        rows = np.hstack([rows, np.zeros((rows.shape[0], pad), np.uint8)])
    return Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                 is_bigendian=int(bigendian), step=step or rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize("encoding, array", [
    ("rgb8", RGB), ("bgr8", RGB[:, :, ::-1].copy()),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
    ("rgb16", RGB.astype(np.uint16) * 257),
])
def test_colour_encodings_decode_to_the_same_rgb(encoding, array):
    np.testing.assert_array_equal(conversions.image_to_rgb(image(array, encoding)), RGB)


def test_mono_and_16_bit_mono():
    gray = RGB[:, :, 0].copy()
    assert (conversions.image_to_rgb(image(gray, "mono8")) == gray[:, :, None]).all()
    deep = conversions.image_to_rgb(image(gray.astype(np.uint16) * 257, "mono16"))
    assert (deep == gray[:, :, None]).all()


COLOUR = (200, 100, 30)  # r, g, b: three different values, so any channel swap shows


def bayer_mosaic(pattern: str, rgb=COLOUR, shape=(6, 8)) -> np.ndarray:
    """A constant-colour Bayer mosaic: `pattern` names the 2×2 cell row by row ("rggb")."""
    mosaic = np.zeros(shape, np.uint8)
    for letter, (row, col) in zip(pattern, ((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[row::2, col::2] = rgb["rgb".index(letter)]
    return mosaic


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_decodes_a_constant_colour_exactly(pattern):
    rgb = conversions.image_to_rgb(image(bayer_mosaic(pattern), f"bayer_{pattern}8"))
    assert rgb.shape == (6, 8, 3) and (rgb == COLOUR).all()
    swapped = pattern[::-1]  # the other diagonal: red and blue (or the greens) change places
    wrong = conversions.image_to_rgb(image(bayer_mosaic(pattern), f"bayer_{swapped}8"))
    assert swapped == pattern or not (wrong == COLOUR).all()


def bt601(y: int, u: int, v: int) -> np.ndarray:
    """RGB of a studio-range BT.601 YUV triple (the ITU formula), rounded and clipped."""
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    return np.clip(np.round([c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d]), 0, 255)


@pytest.mark.parametrize("yuv", [(120, 128, 128), (81, 90, 240), (145, 54, 34)])  # grey, red, green
def test_yuv422_decodes_a_constant_colour_in_its_byte_order(yuv):
    y, u, v = yuv
    uyvy = np.zeros((4, 8, 2), np.uint8)  # ROS 2 "yuv422" is UYVY: U Y V Y
    uyvy[..., 1], uyvy[:, 0::2, 0], uyvy[:, 1::2, 0] = y, u, v
    yuy2 = np.zeros((4, 8, 2), np.uint8)  # "yuv422_yuy2" is YUYV: Y U Y V
    yuy2[..., 0], yuy2[:, 0::2, 1], yuy2[:, 1::2, 1] = y, u, v
    for pixels, encoding in ((uyvy, "yuv422"), (yuy2, "yuv422_yuy2")):
        rgb = conversions.image_to_rgb(image(pixels, encoding))
        assert rgb.shape == (4, 8, 3)
        assert np.abs(rgb.reshape(-1, 3).astype(int) - bt601(y, u, v)).max() <= 1, encoding
    if (u, v) != (128, 128):  # read in the other byte order, a colour comes out another colour
        wrong = conversions.image_to_rgb(image(uyvy, "yuv422_yuy2"))
        assert np.abs(wrong.reshape(-1, 3).astype(int) - bt601(y, u, v)).max() > 1


def test_row_padding_is_removed():
    np.testing.assert_array_equal(conversions.image_to_rgb(image(RGB, "rgb8", pad=8)), RGB)


@pytest.mark.parametrize("msg, reason", [
    (image(RGB, "rgb8", step=10), "step"),
    (Image(height=6, width=8, encoding="rgb8", step=24, data=bytes(100)), "bytes"),
    (image(RGB, "weird42"), "unsupported image encoding"),
    (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty"),
])
def test_bad_raw_frames(msg, reason):
    with pytest.raises(FrameError, match=reason):
        conversions.image_to_rgb(msg)


def test_jpeg_png_and_gray_jpeg():
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    decoded = conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=jpeg.tobytes()))
    expected = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, expected)
    ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(
        conversions.compressed_to_rgb(CompressedImage(format="png", data=png.tobytes())), RGB)
    ok, gray = cv2.imencode(".jpg", RGB[:, :, 0])
    assert conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=gray.tobytes())).shape == (6, 8, 3)


def test_rgb_to_compressed_is_a_jpeg_of_the_pixels_with_the_header():
    """What image_source publishes with compressed:=true: OpenCV's JPEG of the RGB pixels
    (channel order kept), which the node's own decoding reads back."""
    header = Header(stamp=Time(sec=3, nanosec=4), frame_id="cam")
    msg = conversions.rgb_to_compressed(RGB, header)
    assert msg.format == "jpeg" and msg.header == header
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert bytes(msg.data) == jpeg.tobytes()
    np.testing.assert_array_equal(conversions.compressed_to_rgb(msg),
                                  cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0garbage", bytes(50)])
def test_corrupt_compressed_frames(data):
    with pytest.raises(FrameError):
        conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=data))


def test_masks_are_mono8_or_mono16():
    mask = np.array([[0, 3], [20, 1]], np.uint16)
    small = conversions.mask_to_image(mask, Header(), 20)
    assert small.encoding == "mono8" and small.step == 2 and bytes(small.data) == bytes([0, 3, 20, 1])
    large = conversions.mask_to_image(mask + 300, Header(), 400)
    assert large.encoding == "mono16" and large.step == 4
    assert np.frombuffer(bytes(large.data), "<u2").tolist() == [300, 303, 320, 301]


def test_classification_lists_the_tags_best_first_by_label():
    vocabulary = BUILTIN["voc"]
    scores = np.zeros(len(vocabulary.classes))
    scores[[3, 0, 14]] = [0.123456789, 0.2, 0.3]  # 0.123456789: a double that float32 rounds
    tags = relative_threshold_tags(scores, vocabulary.classes, 0.3)
    result = TagResult(vocabulary, scores, scores, tags, refined=torch.zeros(0))
    header = Header(stamp=Time(sec=12, nanosec=34), frame_id="camera_optical")
    message = conversions.classification(result, header)
    assert isinstance(message, Classification) and message.header == header
    assert [(h.class_id, h.score) for h in message.results] == [
        (vocabulary.classes[14], 0.3), (vocabulary.classes[0], 0.2), (vocabulary.classes[3], 0.123456789)]
    assert [h.class_id for h in message.results] == [t.label for t in conversions.tag_array(result, header).tags]


def test_label_info_ids():
    info = conversions.label_info(BUILTIN["voc"], 0.5, Header())
    assert isinstance(info, LabelInfo)
    assert [(c.class_id, c.class_name) for c in info.class_map[:2]] == [(0, "background"), (1, "aeroplane")]
    assert len(info.class_map) == 21 and info.threshold == 0.5
