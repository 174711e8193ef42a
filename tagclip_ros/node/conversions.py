"""ROS message ↔ numpy: decoding camera images of any common encoding, and building outputs.

Decoding uses rosbags-image (ROS 2 cv_bridge is not installable without a distro, and PyPI's
cv-bridge is the ROS 1 build); the checks around it turn every malformed frame into a
`FrameError` with a sentence, instead of a numpy exception from deep inside.
"""
from __future__ import annotations

import io
import re
import warnings
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import PIL.Image
from rosbags.image import ImageConversionError, ImageFormatError, compressed_image_to_cvimage
from rosbags.image import image_to_cvimage
from rosbags.image.image import to_cvtype
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Classification, LabelInfo, ObjectHypothesis, VisionClass

from ..core.detections import Region
from ..core.image import MAX_PIXELS, ImageError, check_size, to_rgb
from ..core.overlay import render_overlay, tag_captions
from ..core.tags import TagResult
from ..core.vocab import Vocabulary
from ..msg import Tag, TagArray
from . import detection_messages

if TYPE_CHECKING:  # the camera feeder imports this module, which must not load torch
    from ..core.pipeline import Perceived

BACKGROUND_LABEL = "background"
# Compressed formats accepted: those OpenCV decodes whose size PIL reads from the header alone,
# so that a small message declaring a huge picture is refused before anything is allocated.
COMPRESSED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM")
# 4:2:0 planar encodings: `height` picture rows of Y, then height / 2 rows of interleaved chroma
# (ROS 2 sensor_msgs/image_encodings: height scaling 1.5).
PLANAR_420 = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21}
EVEN_WIDTH = {"uyvy", "yuv422", "yuyv", "yuv422_yuy2", *PLANAR_420}


class FrameError(ValueError):
    """A received image that cannot be used; the message says why."""


def image_to_rgb(msg: Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image of any encoding rosbags-image knows, plus
    nv12/nv21 as ROS 2 lays them out (FrameError, with a sentence, for anything unusable)."""
    try:
        check_size(msg.height, msg.width)
        _, _, typestr, channels = to_cvtype(msg.encoding)
    except ImageError as exc:
        raise FrameError(str(exc)) from None
    except ImageFormatError:
        raise FrameError(f"unsupported image encoding {msg.encoding!r}") from None
    if np.dtype(typestr).kind == "f":  # depth or feature maps: no colours to show the model
        raise FrameError(f"unsupported image encoding {msg.encoding!r} (floating point)")
    if msg.encoding in EVEN_WIDTH and msg.width % 2:
        raise FrameError(f"{msg.encoding} needs an even width, not {msg.width}")
    planar = msg.encoding in PLANAR_420
    if planar and msg.height % 2:
        raise FrameError(f"{msg.encoding} needs an even height, not {msg.height}")
    try:
        pixels = pixel_rows(msg, msg.width * channels * np.dtype(typestr).itemsize,
                            msg.height * 3 // 2 if planar else msg.height)
    except ValueError as exc:
        raise FrameError(str(exc)) from None
    try:
        if planar:
            return to_rgb(cv2.cvtColor(pixels, PLANAR_420[msg.encoding]))
        packed = SimpleNamespace(encoding=msg.encoding, height=msg.height, width=msg.width,
                                 is_bigendian=msg.is_bigendian, data=pixels.data)
        return to_rgb(image_to_cvimage(packed, "rgb8"))
    except (ImageConversionError, ImageFormatError, ImageError) as exc:
        raise FrameError(f"cannot convert {msg.encoding} to rgb8 ({exc})") from None
    except cv2.error as exc:
        raise FrameError(f"cannot convert {msg.encoding} to rgb8 ({opencv_reason(exc)})") from None


def pixel_rows(msg: Image, row_bytes: int, rows: int) -> np.ndarray:
    """The message's first `rows` rows, each cut to its `row_bytes` bytes of pixels (the step's
    padding dropped), as uint8 (rows, row_bytes); ValueError with a sentence when its step or
    its data are too short for them (colour frames and depth images alike)."""
    if msg.step < row_bytes:
        raise ValueError(f"step {msg.step} is smaller than a {msg.width}-pixel {msg.encoding} "
                         f"row ({row_bytes} bytes)")
    if len(msg.data) < msg.step * rows:
        raise ValueError(f"data holds {len(msg.data)} bytes but {msg.encoding} needs step × "
                         f"{rows} rows = {msg.step * rows}")
    data = np.frombuffer(msg.data, np.uint8, count=msg.step * rows)
    return np.ascontiguousarray(data.reshape(rows, msg.step)[:, :row_bytes])


def opencv_reason(exc: cv2.error) -> str:
    """The one-line reason of an OpenCV error, whose text names a source file and spans lines:
    "OpenCV(5.0.0) /path/x.cpp:108: error: (-215:Assertion failed) REASON in function 'f'"."""
    text = " ".join(str(exc).split())
    match = re.search(r"error: \(-?\d+:[^)]*\) (.*)", text)
    return match.group(1) if match else text


def compressed_size(data: bytes, fmt: str = "") -> tuple[int, int]:
    """(height, width) a compressed image declares in its header, read without decoding it;
    FrameError if it is not one of COMPRESSED_FORMATS or declares more than MAX_PIXELS."""
    try:
        with warnings.catch_warnings():  # of corrupt EXIF, or of > 89 M pixels: refused below
            warnings.simplefilter("ignore")
            with PIL.Image.open(io.BytesIO(data), formats=COMPRESSED_FORMATS) as image:
                width, height = image.size
    except PIL.Image.DecompressionBombError:
        raise FrameError(f"compressed image is larger than {MAX_PIXELS} pixels") from None
    except Exception:  # noqa: BLE001 - PIL's header parsers raise many types on garbage
        raise FrameError(f"corrupt or undecodable compressed image (format {fmt!r}; "
                         f"{'/'.join(COMPRESSED_FORMATS)} accepted)") from None
    try:
        check_size(height, width)
    except ImageError as exc:
        raise FrameError(f"compressed {exc}") from None
    return height, width


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """RGB uint8 from a sensor_msgs/CompressedImage (JPEG, PNG, ...); its header's size is
    checked before decoding, so a few bytes cannot make OpenCV allocate gigabytes."""
    data = bytes(msg.data)
    if not data:
        raise FrameError("compressed image is empty")
    compressed_size(data, msg.format)
    try:
        decoded = compressed_image_to_cvimage(SimpleNamespace(data=data))
    except AssertionError:  # rosbags-image asserts on what OpenCV cannot decode
        raise FrameError(f"corrupt or undecodable compressed image (format {msg.format!r})") from None
    except cv2.error as exc:
        raise FrameError(f"cannot decode compressed image ({opencv_reason(exc)})") from None
    if decoded.ndim == 3 and decoded.shape[2] >= 3:
        decoded = decoded[:, :, 2::-1]  # OpenCV decodes to BGR(A)
    try:
        return to_rgb(decoded)
    except ImageError as exc:
        raise FrameError(str(exc)) from None


def frame_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """RGB uint8 from a camera frame of either transport (FrameError if it cannot be used)."""
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


def is_resend(header: Header, previous: Header | None) -> bool:
    """Whether a frame with `header` is the `previous` frame sent again: the same stamp and
    frame_id (a camera stamps each frame anew); an unset stamp (0) never counts as a repeat."""
    if previous is None or (header.stamp.sec, header.stamp.nanosec) == (0, 0):
        return False
    return header.stamp == previous.stamp and header.frame_id == previous.frame_id


def stamp_seconds(header: Header) -> float:
    """A header's stamp in seconds (what stable tags measure gaps in)."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """sensor_msgs/Image rgb8 from an RGB uint8 array."""
    return Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                 is_bigendian=0, step=rgb.shape[1] * 3, data=np.ascontiguousarray(rgb).tobytes())


def rgb_to_compressed(rgb: np.ndarray, header: Header) -> CompressedImage:
    """sensor_msgs/CompressedImage (JPEG, OpenCV's default quality) from an RGB uint8 array."""
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return CompressedImage(header=header, format="jpeg", data=jpeg.tobytes())


def mask_to_image(mask: np.ndarray, header: Header, num_classes: int) -> Image:
    """Label mask as mono8 when every id fits in a byte (≤ 255 classes), else mono16."""
    if num_classes <= 255:
        data, encoding, depth = mask.astype(np.uint8), "mono8", 1
    else:
        data, encoding, depth = mask.astype("<u2"), "mono16", 2
    return Image(header=header, height=mask.shape[0], width=mask.shape[1], encoding=encoding,
                 is_bigendian=0, step=mask.shape[1] * depth, data=data.tobytes())


def tag_array(result: TagResult, header: Header) -> TagArray:
    """The image's tags (best first) and every class score, with the input's header."""
    tags = [Tag(class_id=t.class_id, label=t.label, score=float(t.score)) for t in result.tags]
    return TagArray(header=header, tags=tags, scores=[float(s) for s in result.scores])


def classification(result: TagResult, header: Header) -> Classification:
    """The image's tags (best first) as vision_msgs, with the input's header: `class_id` is the
    tag's label, so planners need no label map; every class's score stays in `tag_array`."""
    results = [ObjectHypothesis(class_id=t.label, score=float(t.score)) for t in result.tags]
    return Classification(header=header, results=results)


def result_messages(perceived: Perceived, header: Header, rgb: np.ndarray,
                    overlay: bool, regions: list[Region] | None = None) -> dict[str, Any]:
    """Output topic → message for one frame (what the node publishes and `tagclip bag` writes):
    tags, classification, label_mask when a mask was made, if `overlay` the overlay picture
    and, given the frame's `regions` (detection_messages.frame_regions), detections; all with
    the input's header."""
    result = perceived.tags
    out: dict[str, Any] = {"tags": tag_array(result, header),
                           "classification": classification(result, header)}
    mask = perceived.segmentation.mask if perceived.segmentation is not None else None
    if mask is not None:
        out["label_mask"] = mask_to_image(mask, header, len(result.vocabulary.classes))
    if overlay:
        out["overlay"] = rgb_to_image(render_overlay(rgb, mask, tag_captions(result.tags)), header)
    if regions is not None:
        out["detections"] = detection_messages.detection_2d_array(regions, header)
    return out


def label_info(vocabulary: Vocabulary, threshold: float, header: Header) -> LabelInfo:
    """Id → name map of the label mask (vision_msgs): 0 is background, vocabulary entry i is
    i + 1."""
    classes = [VisionClass(class_id=0, class_name=BACKGROUND_LABEL)]
    classes += [VisionClass(class_id=i + 1, class_name=n) for i, n in enumerate(vocabulary.classes)]
    return LabelInfo(header=header, class_map=classes, threshold=float(threshold))
