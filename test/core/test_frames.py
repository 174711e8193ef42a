"""Frame sources: what a source string names, videos frame by frame in order, folders that skip
bad images, looping, and one sentence (no OpenCV noise) for sources that cannot be used."""
from __future__ import annotations

import itertools
import cv2
import numpy as np
import pytest
from PIL import Image

from tagclip_ros.core.frames import (ImageFiles, SourceError, SourceSpec, VideoFile,
                                     open_source, parse_source, stream)

FRAMES = 12
SIZE = (64, 48)  # width, height


def write_video(path: str, count: int = FRAMES) -> str:
    """An MJPG .avi whose frame i is flat colour (R, G, B) = (10 + 20 i, 128, 40): flat areas
    survive JPEG almost exactly, and red ≠ blue shows a channel swap."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for index in range(count):
        bgr = np.empty((SIZE[1], SIZE[0], 3), np.uint8)
        bgr[:] = (40, 128, 10 + 20 * index)
        writer.write(bgr)
    writer.release()
    return path


def frame_index(rgb: np.ndarray) -> int:
    """The index `write_video` drew into an RGB frame; fails on anything else."""
    red, green, blue = (float(rgb[:, :, c].mean()) for c in range(3))
    index = round((red - 10) / 20)
    assert abs(red - (10 + 20 * index)) < 6 and abs(green - 128) < 6 and abs(blue - 40) < 6, (
        f"frame colour {red:.0f}, {green:.0f}, {blue:.0f} is not one write_video drew")
    return index


@pytest.fixture
def video(tmp_path) -> str:
    return write_video(str(tmp_path / "clip.avi"))


def test_source_strings_name_cameras_folders_images_and_videos(tmp_path, video):
    still = str(tmp_path / "still.png")
    Image.new("RGB", (8, 8)).save(still)
    assert parse_source("0") == SourceSpec("camera", 0)
    assert parse_source(" 2 ") == SourceSpec("camera", 2)
    assert parse_source("/dev/video0") == SourceSpec("camera", "/dev/video0")
    assert parse_source(str(tmp_path)) == SourceSpec("folder", str(tmp_path))
    assert parse_source(still) == SourceSpec("image", still)
    assert parse_source(video) == SourceSpec("video", video)
    with pytest.raises(SourceError, match="no such file or folder"):
        parse_source(str(tmp_path / "missing.mp4"))


def test_a_video_gives_every_frame_in_order(video):
    source = open_source(video)
    assert isinstance(source, VideoFile)
    frames = list(stream(source, loop=False))
    assert [frame_index(f.rgb) for f in frames] == list(range(FRAMES))
    assert [f.name for f in frames] == [f"clip.avi[{i}]" for i in range(FRAMES)]
    assert all(f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8 for f in frames)


def test_loop_starts_a_video_again_at_its_end(video):
    frames = itertools.islice(stream(open_source(video), loop=True), 2 * FRAMES + 3)
    assert [frame_index(f.rgb) for f in frames] == [i % FRAMES for i in range(2 * FRAMES + 3)]


def test_a_folder_gives_its_images_by_name_and_skips_unreadable_ones(tmp_path):
    for name, level in (("b.png", 50), ("a.jpg", 90)):
        Image.new("RGB", (8, 6), (level, level, level)).save(tmp_path / name)
    (tmp_path / "c.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    warnings: list[str] = []
    source = open_source(str(tmp_path), warnings.append)
    assert isinstance(source, ImageFiles)
    frames = list(stream(source, loop=False))
    assert [f.name for f in frames] == ["a.jpg", "b.png"]
    assert [f.rgb.shape for f in frames] == [(6, 8, 3), (6, 8, 3)]
    assert len(warnings) == 1 and "c.png" in warnings[0]


def test_a_single_image_file_is_a_one_frame_source(tmp_path):
    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "still.png")
    frames = list(stream(open_source(str(tmp_path / "still.png")), loop=False))
    assert len(frames) == 1 and frames[0].rgb[0, 0].tolist() == [1, 2, 3]


def test_a_folder_of_only_unreadable_images_fails_instead_of_looping(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    warnings: list[str] = []
    with pytest.raises(SourceError, match="no readable frames"):
        list(itertools.islice(stream(open_source(str(tmp_path), warnings.append), loop=True), 5))
    assert len(warnings) == 1


@pytest.mark.parametrize("spec, words", [
    ("{tmp}/missing.avi", "no such file or folder"),
    ("{tmp}/empty", "holds no image files"),
    ("{tmp}/text.avi", "is not a video OpenCV can read"),
    ("/dev/video99", "there is no camera at /dev/video99"),
    ("99", "camera 99 cannot be opened"),
    ("/dev/null", "/dev/null cannot be opened"),  # a device, but not a camera
])
def test_unusable_sources_raise_one_sentence_and_nothing_else(tmp_path, capfd, spec, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.avi").write_text("not a video\n")
    with pytest.raises(SourceError) as error:
        open_source(spec.format(tmp=tmp_path))
    message = str(error.value)
    assert words in message and "\n" not in message
    assert capfd.readouterr().err == ""  # OpenCV's backend warnings are silenced
