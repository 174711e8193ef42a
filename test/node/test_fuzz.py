"""Property-based fuzzing of the camera-frame conversions (in process).

Every generated sensor_msgs/Image or CompressedImage either converts to an RGB uint8 (H, W, 3)
array — of the message's declared size for raw images — or raises `FrameError` with one
sentence; never any other exception, warning or huge allocation. Well-formed frames of a
supported encoding must convert, so a conversion that rejects everything fails too.

The generators here are shared with test_fuzz_node.py, which sends such frames to the node.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from collections import Counter

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from tagclip_ros.core.image import MAX_PIXELS
from tagclip_ros.node import conversions
from tagclip_ros.node.conversions import FrameError

UINT32_MAX = 2**32 - 1
MAX_DATA = 1 << 16  # bytes of payload a generated frame carries at most

# encoding -> (channels, bytes per channel) as ROS 2's sensor_msgs/image_encodings defines them
ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1),
    "rgb16": (3, 2), "bgr16": (3, 2), "rgba16": (4, 2), "bgra16": (4, 2),
    "mono8": (1, 1), "mono16": (1, 2),
    "bayer_rggb8": (1, 1), "bayer_bggr8": (1, 1), "bayer_gbrg8": (1, 1), "bayer_grbg8": (1, 1),
    "bayer_rggb16": (1, 2), "bayer_bggr16": (1, 2), "bayer_gbrg16": (1, 2),
    "bayer_grbg16": (1, 2),
    "uyvy": (2, 1), "yuv422": (2, 1), "yuyv": (2, 1), "yuv422_yuy2": (2, 1),
    "nv12": (1, 1), "nv21": (1, 1),  # 4:2:0 planar: `height` picture rows, 1.5 × that in data
}
EVEN_WIDTH = {"uyvy", "yuv422", "yuyv", "yuv422_yuy2", "nv12", "nv21"}
EVEN_HEIGHT = {"nv12", "nv21"}
# OpenCV-style generic encodings: some convert (3 integer channels), most are refused
GENERIC = ["8UC3", "8UC1", "8UC4", "8SC3", "16UC3", "16SC3", "32SC3", "32FC1", "32FC3", "64FC3",
           "8UC", "8UC0", "16UC999", "nv24", "RGB8", "jpeg", ""]
HUGE_SIDES = [65_536, 1 << 20, 1 << 31, UINT32_MAX, 8_001, 8_000]
ENCODING_RE = re.compile(r"(8|16|32|64)([USF])C(\d*)")


def layout(encoding: str) -> tuple[int, int] | None:
    """(channels, bytes per channel) of an encoding, if it has a known pixel layout."""
    if encoding in ENCODINGS:
        return ENCODINGS[encoding]
    match = ENCODING_RE.fullmatch(encoding)
    if match:
        return int(match.group(3) or 1), int(match.group(1)) // 8
    return None


def data_rows(encoding: str, height: int) -> int:
    """Rows of `step` bytes that `height` picture rows occupy (1.5× for nv12/nv21)."""
    return height * 3 // 2 if encoding in EVEN_HEIGHT else height


def payload(seed: int, length: int, pattern: int) -> bytes:
    """`length` bytes: random from `seed`, or all zeros / all 0xff (cheap for Hypothesis)."""
    if pattern == 1:
        return bytes(length)
    if pattern == 2:
        return b"\xff" * length
    return np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()


class RawCase:
    """A generated raw frame and whether it is well formed (then it must convert)."""

    def __init__(self, msg: Image, well_formed: bool, kind: str) -> None:
        self.msg, self.well_formed, self.kind = msg, well_formed, kind

    def __repr__(self) -> str:  # Hypothesis prints this on failure: no 64 KiB byte dumps
        m = self.msg
        return (f"RawCase({self.kind}: {m.encoding!r} {m.width}x{m.height} step={m.step} "
                f"bigendian={m.is_bigendian} data={len(m.data)} bytes, "
                f"well_formed={self.well_formed})")


@st.composite
def raw_frames(draw, valid_share: int = 4, max_side: int = 24) -> RawCase:
    """A sensor_msgs/Image: well formed (`valid_share` in `valid_share` + 6) or broken in one or
    more of size, step, payload length, encoding and byte order; sides mostly small."""
    kind = draw(st.sampled_from(
        ["valid"] * valid_share + ["step", "data", "encoding", "size", "huge", "anything"]))
    if kind == "encoding":
        encoding = draw(st.one_of(st.sampled_from(GENERIC), st.text(max_size=12)))
    else:
        encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    if kind == "huge":
        height = draw(st.one_of(st.sampled_from(HUGE_SIDES), st.integers(0, UINT32_MAX)))
        width = draw(st.one_of(st.sampled_from(HUGE_SIDES), st.integers(0, UINT32_MAX)))
    elif kind == "size":
        height, width = draw(st.sampled_from([(0, 0), (0, 5), (5, 0), (1, 1), (1, 7), (7, 1)]))
    else:
        height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    if kind == "valid":  # round odd sides up where the encoding needs even ones
        width += width % 2 if encoding in EVEN_WIDTH else 0
        height += height % 2 if encoding in EVEN_HEIGHT else 0
    channels, depth = layout(encoding) or (draw(st.integers(0, 4)), 1)
    row = width * channels * depth
    if kind in ("step", "anything"):
        step = draw(st.one_of(st.integers(0, max(row - 1, 0)), st.integers(0, UINT32_MAX),
                              st.just(row + 1)))
    else:
        step = row + draw(st.sampled_from([0, 0, 0, 1, 3, 8]))
    step = min(step, UINT32_MAX)  # a uint32 field
    needed = step * data_rows(encoding, height)
    if needed > MAX_DATA:
        length = draw(st.integers(0, 256))
    elif kind in ("data", "anything"):
        length = draw(st.one_of(st.integers(0, max(needed - 1, 0)), st.integers(0, 2 * needed + 8)))
    else:
        length = needed + draw(st.sampled_from([0, 0, 0, 5]))
    bigendian = draw(st.sampled_from([0, 1])) if kind != "anything" else draw(st.integers(0, 255))
    data = payload(draw(st.integers(0, 2**32)), length, draw(st.integers(0, 5)))
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                step=step, data=data)
    well_formed = (kind == "valid" or (
        encoding in ENCODINGS and 0 < height * width <= MAX_PIXELS
        and step >= width * channels * depth and length >= needed and bigendian in (0, 1)
        and not (encoding in EVEN_WIDTH and width % 2)
        and not (encoding in EVEN_HEIGHT and height % 2)))
    return RawCase(msg, well_formed, kind)


# ---- compressed ------------------------------------------------------------------------------
def encode(image: np.ndarray, ext: str, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, image, params)
    assert ok
    return data.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_declared_size(data: bytes, height: int, width: int) -> bytes:
    """The JPEG (first SOF) or PNG (IHDR, CRC fixed) with other dimensions in its header."""
    if data.startswith(b"\x89PNG"):
        ihdr = bytearray(data[16:29])
        ihdr[0:8] = struct.pack(">II", width, height)
        return data[:8] + png_chunk(b"IHDR", bytes(ihdr)) + data[33:]
    at = 2  # JPEG: walk the marker segments after SOI to the frame header
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return data[:at + 5] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + data[at + 9:]


class CompressedCase:
    """A generated compressed frame; `shape` is the encoded picture's when left intact."""

    def __init__(self, msg: CompressedImage, shape: tuple[int, int] | None, kind: str) -> None:
        self.msg, self.shape, self.kind = msg, shape, kind

    def __repr__(self) -> str:
        head = bytes(self.msg.data[:16])
        return (f"CompressedCase({self.kind}: format={self.msg.format!r}, "
                f"{len(self.msg.data)} bytes starting {head!r}, intact shape={self.shape})")


@st.composite
def compressed_frames(draw, valid_share: int = 4, max_side: int = 32) -> CompressedCase:
    """A sensor_msgs/CompressedImage: a real JPEG/PNG (or BMP, WebP, TIFF) from OpenCV, left
    intact (`valid_share` in `valid_share` + 8) or truncated, bit-flipped, padded, given a
    different — often huge — declared size; or random bytes, with or without a signature."""
    kind = draw(st.sampled_from(["valid"] * valid_share + [
        "truncate", "flip", "append", "resize", "resize", "random", "magic", "empty"]))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    ext = draw(st.sampled_from([".jpg", ".jpg", ".png", ".png", ".bmp", ".webp", ".tif"]))
    if kind == "resize":
        ext = draw(st.sampled_from([".jpg", ".png"]))
    channels = draw(st.sampled_from([1, 3, 4] if ext == ".png" else [1, 3]))
    dtype = np.uint16 if ext == ".png" and draw(st.booleans()) else np.uint8
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    image = rng.integers(0, np.iinfo(dtype).max + 1, (height, width, channels), dtype=dtype)
    data = encode(image, ext, draw(st.integers(1, 100)))
    shape: tuple[int, int] | None = None
    if kind == "valid":
        shape = (height, width)
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        buffer = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            buffer[draw(st.integers(0, len(buffer) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(buffer)
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    elif kind == "resize":
        side = st.sampled_from([0, 7, 64, 8_001, 20_000, 65_535, 65_535, 1_000_001, 2**31 - 1]
                               if ext == ".png" else [0, 7, 64, 8_001, 20_000, 20_000, 65_535])
        data = with_declared_size(data, draw(side), draw(side))
        if draw(st.integers(0, 3)) == 0:
            data = data[:draw(st.integers(0, len(data)))]
    elif kind == "random":
        data = draw(st.binary(max_size=512))
    elif kind == "magic":
        data = draw(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00",
                                     b"RIFF\x00\x00\x00\x00WEBP", b"P6\n"]))
        data += draw(st.binary(max_size=256))
    else:
        data = b""
    fmt = draw(st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8",
                                "rgb8; png compressed rgb8", "", "tiff"]))
    return CompressedCase(CompressedImage(format=fmt, data=data), shape, kind)


def opencv_rgb(data: bytes) -> np.ndarray:
    """What OpenCV itself decodes from intact bytes, as RGB (the conversion's reference)."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR)
    if decoded.ndim == 2:
        return np.repeat(decoded[:, :, None], 3, axis=2)
    return np.ascontiguousarray(decoded[:, :, 2::-1])


# ---- properties ------------------------------------------------------------------------------
FUZZ = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNTS: Counter[tuple[str, str]] = Counter()  # (transport, kind) -> cases run


def convert(msg: Image | CompressedImage) -> np.ndarray | None:
    """frame_to_rgb, checked for the contract: an RGB uint8 array or FrameError (one line),
    no other exception and no warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rgb = conversions.frame_to_rgb(msg)
        except FrameError as exc:
            assert str(exc) and "\n" not in str(exc) and "Traceback" not in str(exc), repr(str(exc))
            rgb = None
    assert not caught, [str(w.message) for w in caught]
    if rgb is not None:
        assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
        assert 0 < rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
    return rgb


@FUZZ
@given(raw_frames())
def test_raw_frames_convert_to_their_size_or_raise_frame_error(case: RawCase):
    COUNTS["raw", case.kind] += 1
    msg = case.msg
    rgb = convert(msg)
    if case.well_formed:
        assert rgb is not None, f"well-formed {msg.encoding} frame rejected"
    if rgb is None:
        return
    assert rgb.shape == (msg.height, msg.width, 3)
    if msg.encoding in ("rgb8", "bgr8", "mono8", "8UC3"):  # pixels come through unchanged
        channels = 1 if msg.encoding == "mono8" else 3
        rows = np.frombuffer(bytes(msg.data), np.uint8, count=msg.step * msg.height)
        pixels = rows.reshape(msg.height, msg.step)[:, :msg.width * channels]
        pixels = pixels.reshape(msg.height, msg.width, channels)
        expected = {"bgr8": pixels[:, :, ::-1], "mono8": np.repeat(pixels, 3, axis=2)}.get(
            msg.encoding, pixels)
        np.testing.assert_array_equal(rgb, expected)


@FUZZ
@given(compressed_frames())
def test_compressed_frames_decode_or_raise_frame_error(case: CompressedCase):
    COUNTS["compressed", case.kind] += 1
    rgb = convert(case.msg)
    if case.shape is not None:  # intact: decodes, to what OpenCV decodes
        assert rgb is not None, "intact image rejected"
        assert rgb.shape == (*case.shape, 3)
        np.testing.assert_array_equal(rgb, opencv_rgb(bytes(case.msg.data)))


# Decodes one compressed frame in a fresh interpreter and prints the outcome and how far that
# frame raised the process's peak memory (KiB): the peak of the new process's own memory map
# (VmHWM; ru_maxrss would carry the forking test process's peak across the exec), so that it
# is this frame's, not a high-water mark left by earlier tests.
DECODE_ONE = """
import re, sys
from sensor_msgs.msg import CompressedImage
from tagclip_ros.node.conversions import FrameError, compressed_to_rgb

def peak_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))

data = open(sys.argv[1], "rb").read()
before = peak_kib()
try:
    compressed_to_rgb(CompressedImage(format=sys.argv[2], data=data))
    outcome = "decoded"
except FrameError as exc:
    outcome = "refused: " + str(exc)
print(peak_kib() - before, outcome)
"""


def decode_in_a_fresh_process(data: bytes, fmt: str, folder) -> tuple[float, str]:
    """(peak memory growth in MiB, outcome) of decoding `data` alone in a new interpreter."""
    path = os.path.join(folder, f"frame.{fmt}")
    with open(path, "wb") as f:
        f.write(data)
    done = subprocess.run([sys.executable, "-c", DECODE_ONE, path, fmt], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_kib, outcome = done.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(grown_kib) / 1024, outcome


HEADER_ONLY_MIB = 100  # a refused frame's peak; decoding even the smallest (8001²) would take 183


@pytest.mark.parametrize("side", [8_001, 20_000, 65_535])
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_huge_declared_size_is_refused_before_decoding(ext, side, tmp_path):
    """A few hundred bytes claiming side×side pixels: refused from the header, without the up to
    12 GB OpenCV would allocate (and fill, for a JPEG) to decode it; each case measured alone."""
    small = encode(np.zeros((16, 16, 3), np.uint8), ext, 90)
    frame = with_declared_size(small, side, side)
    grown_mib, outcome = decode_in_a_fresh_process(frame, ext[1:], tmp_path)
    assert outcome.startswith("refused") and "larger than" in outcome, outcome
    assert grown_mib < HEADER_ONLY_MIB, f"a {side}x{side} header raised peak memory {grown_mib:.0f} MiB"


def test_the_memory_measure_sees_a_real_decode(tmp_path):
    """The fresh-process measure is live: a genuine 8000×8000 JPEG, the largest accepted (192 MB
    of pixels), raises the peak past the bound the refused frames are held to."""
    big = encode(np.zeros((8000, 8000, 3), np.uint8), ".jpg", 90)
    grown_mib, outcome = decode_in_a_fresh_process(big, "jpg", tmp_path)
    assert outcome == "decoded" and grown_mib > HEADER_ONLY_MIB, (grown_mib, outcome)


def test_nv12_height_is_the_picture_height():
    """nv12/nv21 as ROS 2 defines them: `height` picture rows, the chroma plane below."""
    blocks = np.random.default_rng(5).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)  # 2×2 blocks: chroma survives 4:2:0
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)  # Y plane, then U and V planes
    y, u, v = i420[:6], i420[6:].reshape(-1)[:12], i420[6:].reshape(-1)[12:]
    nv12 = np.vstack([y, np.stack([u, v], axis=1).reshape(3, 8)])
    nv21 = np.vstack([y, np.stack([v, u], axis=1).reshape(3, 8)])
    expected = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    assert np.abs(expected.astype(int) - rgb).mean() < 4  # a picture, not chroma read as luma
    for encoding, plane in (("nv12", nv12), ("nv21", nv21)):
        padded = np.hstack([plane, np.zeros((9, 4), np.uint8)])  # step 12: 4 bytes of padding
        msg = Image(height=6, width=8, encoding=encoding, step=12, data=padded.tobytes())
        np.testing.assert_array_equal(conversions.image_to_rgb(msg), expected)


def test_enough_cases_ran():  # runs after the properties (file order)
    """The properties above ran the cases they claim, every kind of damage among them."""
    totals = {t: sum(n for (transport, _), n in COUNTS.items() if transport == t)
              for t in ("raw", "compressed")}
    if 0 in totals.values():
        pytest.skip("run together with the property tests")
    print(f"in-process fuzz cases: {totals}, by kind: {dict(sorted(COUNTS.items()))}")
    assert totals["raw"] >= 500 and totals["compressed"] >= 500, totals
    assert len(COUNTS) == 7 + 8 and min(COUNTS.values()) >= 20, COUNTS
