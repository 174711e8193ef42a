"""Frame sources: a folder of images, an image or video file, or a camera, read with OpenCV.

What `image_source` publishes, for demos and for users whose camera has no ROS driver. A source is
named by one string, as a user types it (`parse_source`): a folder, an image file, a video file
(any format OpenCV reads), `/dev/videoN` or a camera index. Frames are decoded one at a time when
asked for, so a long video is never held in memory, and come out as RGB uint8 arrays checked by
`core.image` like every other image. A source that cannot be used raises `SourceError` with one
sentence for the user. No ROS here.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .image import IMAGE_EXTENSIONS, ImageError, image_files, read_image, to_rgb

CAMERA_DEVICE = re.compile(r"/dev/video\d+")
Warn = Callable[[str], None]


class SourceError(ImageError):
    """A frame source that cannot be opened or read. An ImageError, so that code handling bad
    images handles bad sources the same way."""


@dataclass(frozen=True)
class SourceSpec:
    """What a source string names: `kind` is folder, image, video or camera; `location` is a
    path, or an int for a camera index."""

    kind: str
    location: str | int


@dataclass(frozen=True)
class Frame:
    """One decoded frame: a name for messages (`cat.jpg`, `clip.avi[7]`) and its RGB pixels."""

    name: str
    rgb: np.ndarray


class FrameSource(Protocol):
    """Frames in order, one pass per `frames()` call; `rewindable` sources can make another."""

    rewindable: bool

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def parse_source(spec: str) -> SourceSpec:
    """Classify a source string without opening anything: a camera index (`0`), a camera device
    (`/dev/video0`, or any character device such as `/dev/v4l/by-id/...`), an existing folder,
    image file or other file (taken to be a video)."""
    text = spec.strip()
    if text.isdigit():
        return SourceSpec("camera", int(text))
    path = os.path.expanduser(text)
    if CAMERA_DEVICE.fullmatch(text) or _is_device(path):
        return SourceSpec("camera", path)
    if os.path.isdir(path):
        return SourceSpec("folder", path)
    if not os.path.isfile(path):
        raise SourceError(f"{spec}: no such file or folder (a source is a folder, an image or "
                          "video file, /dev/videoN or a camera index)")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return SourceSpec("image", path)
    return SourceSpec("video", path)


def open_source(spec: str, warn: Warn | None = None) -> FrameSource:
    """Open what `spec` names (see `parse_source`), failing now if it cannot be used: a folder
    without image files, a file OpenCV cannot decode as a video, a camera that does not open.
    `warn` receives a sentence per skipped unreadable image (default: this module's logger)."""
    parsed = parse_source(spec)
    warn = warn or logging.getLogger(__name__).warning
    if parsed.kind == "folder":
        return ImageFiles(str(parsed.location), _folder_images(str(parsed.location)), warn)
    if parsed.kind == "image":
        return ImageFiles(str(parsed.location), [str(parsed.location)], warn)
    if parsed.kind == "video":
        return VideoFile(str(parsed.location))
    return Camera(parsed.location)


def stream(source: FrameSource, loop: bool) -> Iterator[Frame]:
    """The source's frames; with `loop`, pass after pass (a camera has only one, endless pass).
    A pass that yields nothing is an error rather than an endless loop of empty passes."""
    while True:
        count = 0
        for frame in source.frames():
            count += 1
            yield frame
        if count == 0:
            raise SourceError(f"{source} delivered no readable frames")
        if not (loop and source.rewindable):
            return


class ImageFiles:
    """Still images (a folder's, or one file), decoded one at a time in name order; an
    unreadable one is reported through `warn` and skipped."""

    rewindable = True

    def __init__(self, label: str, paths: list[str], warn: Warn) -> None:
        if not paths:
            raise SourceError(f"{label} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.label = label
        self.paths = paths
        self.warn = warn

    def __str__(self) -> str:
        return self.label

    def frames(self) -> Iterator[Frame]:
        for path in self.paths:
            try:
                rgb = read_image(path)
            except ImageError as exc:
                self.warn(f"skipping {exc}")
                continue
            yield Frame(os.path.basename(path), rgb)

    def close(self) -> None:
        """Nothing to release: each file is closed once read."""


class VideoFile:
    """A video file, decoded frame by frame; each pass reopens it from the start."""

    rewindable = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        capture = _capture(path, f"{path} is not a video OpenCV can read")
        ok, _ = capture.read()
        capture.release()
        if not ok:
            raise SourceError(f"{path} is a video without a readable frame")

    def __str__(self) -> str:
        return self.path

    def frames(self) -> Iterator[Frame]:
        capture = _capture(self.path, f"{self.path} can no longer be read as a video")
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield Frame(f"{self.name}[{index}]", _to_rgb(bgr, self.path))
                index += 1
        finally:
            capture.release()

    def close(self) -> None:
        """Nothing to release: each pass closes the file when it ends."""


class Camera:
    """A camera (V4L2 device path or OpenCV index), opened once and read until it fails."""

    rewindable = False

    def __init__(self, device: str | int) -> None:
        self.label = f"camera {device}" if isinstance(device, int) else device
        if isinstance(device, str) and not os.path.exists(device):
            raise SourceError(f"there is no camera at {device} (no such device)")
        self.capture = _capture(device, f"{self.label} cannot be opened "
                                        "(not a camera, in use, or no permission)")
        self.capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not one queued long ago

    def __str__(self) -> str:
        return self.label

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                raise SourceError(f"{self.label} stopped delivering frames")
            yield Frame(f"{self.label}[{index}]", _to_rgb(bgr, self.label))
            index += 1

    def close(self) -> None:
        self.capture.release()


def _is_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _folder_images(folder: str) -> list[str]:
    try:
        return image_files(folder)
    except OSError as exc:
        raise SourceError(f"{folder} cannot be listed ({exc.strerror})") from None


def _capture(target: str | int, failure: str) -> cv2.VideoCapture:
    """An opened VideoCapture, or SourceError(failure). OpenCV's own warnings while probing
    backends are silenced: the failure sentence says what went wrong."""
    with _quiet_opencv():
        capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        raise SourceError(failure)
    return capture


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _to_rgb(bgr: np.ndarray, label: str) -> np.ndarray:
    """RGB from what OpenCV decoded (BGR, BGRA or gray), checked like any image."""
    if bgr.ndim == 3 and bgr.shape[2] >= 3:
        bgr = bgr[:, :, 2::-1]
    try:
        return to_rgb(bgr)
    except ImageError as exc:
        raise SourceError(f"{label} gave an unusable frame ({exc})") from None
