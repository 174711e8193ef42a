"""Stable tags (`temporal.*`) in the node, as a real process over DDS: a short video played by
image_source where a class flickers gets tags that hold still and follow a real change, equal to
the core's StableTags over the same frames; a change of temporal.* starts the stream over;
with no smoothing, no run and no hysteresis the tags are those of temporal.enabled off."""
from __future__ import annotations

import os
import subprocess
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tagclip_ros.core import read_image
from tagclip_ros.core.frames import open_source, stream
from tagclip_ros.core.temporal import StableTags, TemporalSettings
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import Camera, stop_process, wait_until

from ..conftest import IMAGES, WEIGHTS
from .conftest import answer_for, started_tagger
from .test_image_source import IMAGE_SOURCE, START_S, read, stamp_seconds
from .test_tagger_node import set_parameter

NS = "/stable"
RESET_AFTER = 3600.0  # stamps of a busy machine's frames may lie seconds apart: never a reset here
SETTINGS = TemporalSettings(reset_after=RESET_AFTER)  # the defaults otherwise
SIZE = (160, 112)
# A: the astronaut; B: the same, mirrored. Three A, B and A by turns three times, then B only.
SEQUENCE = "AAA" + "BA" * 3 + "BBBB"
STEADY_B = SEQUENCE.index("BBBB")


@pytest.fixture(scope="module")
def stable_tagger(ros, tmp_path_factory, text_cache_dir):
    log = str(tmp_path_factory.mktemp("logs") / "stable.log")
    process = started_tagger(ros, NS, log, {
        "model.weights": WEIGHTS, "device": "cpu", "text_cache_dir": text_cache_dir,
        "segmentation.method": "dmar", "temporal.enabled": "true",
        "temporal.reset_after": RESET_AFTER})
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


def astronaut() -> np.ndarray:
    return cv2.resize(read_image(os.path.join(IMAGES, "astronaut.jpg")), SIZE, interpolation=cv2.INTER_AREA)


def flicker_video(path: str) -> str:
    """SEQUENCE as an MJPG video (what a camera recording is): with the reference checkpoint,
    TagCLIP tags a class in every decoded B frame and in no A frame (checked by the test)."""
    a = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    frames = {"A": a, "B": a[:, ::-1].copy()}
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for name in SEQUENCE:
        writer.write(frames[name])
    writer.release()
    return path


def by_stamp(messages: list) -> dict[float, object]:
    """The first message of each stamp (image_source sends an unanswered frame again)."""
    first: dict[float, object] = {}
    for msg in list(messages):
        first.setdefault(stamp_seconds(msg), msg)
    return first


def labels(tags) -> list[str]:
    return [t.label for t in tags]


def video_frames(path: str) -> list[np.ndarray]:
    """The video's frames as image_source decodes and sends them (rgb8: lossless on the way)."""
    source = open_source(path)
    try:
        return [frame.rgb for frame in stream(source, loop=False)]
    finally:
        source.close()


def test_a_flickering_class_in_a_video_is_held_back_and_a_real_change_followed(
        ros, stable_tagger, voc_perception, tmp_path):
    tags, masks = ros.collect(TagArray, f"{NS}/tags"), ros.collect(Image, f"{NS}/label_mask")
    video = flicker_video(str(tmp_path / "flicker.avi"))
    log = str(tmp_path / "source.log")
    with open(log, "w") as out:  # paced: each frame once the last one's tags are in, none dropped
        source = subprocess.Popen([IMAGE_SOURCE, "--ros-args", "-r", f"__ns:={NS}", "-r",
                                   f"image:={NS}/camera", "-p", f"source:={video}", "-p",
                                   "loop:=false", "-p", "paced:=true", "-p", "rate:=20.0"],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: source.poll() is not None, START_S + 60 * len(SEQUENCE), "the video's pass")
    finally:
        stop_process(source, log)
    assert source.returncode == 0, read(log)
    # Paced: each frame went out once the previous one was answered, so the answers' stamps
    # order the frames (the test does not subscribe to the images: on a busy machine its own
    # subscription may match image_source only after the short video has gone by).
    rgbs = video_frames(video)
    assert len(rgbs) == len(SEQUENCE)
    wait_until(lambda: len(by_stamp(tags)) >= len(rgbs) and len(by_stamp(masks)) >= len(rgbs), 30,
               "every frame's tags and label mask")
    answers, mask_of = by_stamp(tags), by_stamp(masks)
    assert len(answers) == len(rgbs), read(log)

    stable, raw = StableTags(SETTINGS), []
    factor = voc_perception.tagger.settings.tag_threshold
    for stamp, rgb in zip(sorted(answers), rgbs):
        def select(result, stamp=stamp):
            raw.append(result)
            return stable.update(result, factor, stamp)
        expected = voc_perception.run(rgb, "dmar", select=select)
        answer = answers[stamp]
        assert [(t.class_id, t.label) for t in answer.tags] == \
            [(t.class_id, t.label) for t in expected.tags.tags], stamp
        np.testing.assert_allclose(answer.scores, expected.tags.scores, rtol=0, atol=1e-5)
        ids = np.frombuffer(bytes(mask_of[stamp].data), np.uint8).reshape(rgb.shape[:2])
        assert set(np.unique(ids).tolist()) <= {0} | {t.class_id for t in answer.tags}
        assert np.mean(ids == expected.segmentation.mask) >= 0.999

    published = [labels(answers[s].tags) for s in sorted(answers)]
    in_b = set.intersection(*(set(labels(r.tags)) for r, n in zip(raw, SEQUENCE) if n == "B"))
    flickering = in_b - set().union(*(labels(r.tags) for r, n in zip(raw, SEQUENCE) if n == "A"))
    assert flickering, [labels(r.tags) for r in raw]  # TagCLIP alone: in with B, out with A
    assert not flickering & set().union(*published[:STEADY_B + SETTINGS.min_frames - 1]), published
    for tagged in published[STEADY_B + SETTINGS.min_frames - 1:]:  # B from now on: followed
        assert flickering <= set(tagged), published
    assert published[0] == []  # a stream's first frame: no class has had min_frames yet


def send_and_answer(ros, camera: Camera, frame: Image, tags: list, sec: int) -> TagArray:
    return answer_for(tags, camera.send(frame, sec), resend=lambda: camera.send(frame, sec))


def test_a_change_of_temporal_settings_starts_the_stream_over(ros, stable_tagger, voc_perception):
    """Tags are empty for a stream's first frames; a change of any temporal.* starts over."""
    tags, masks = ros.collect(TagArray, f"{NS}/tags"), ros.collect(Image, f"{NS}/label_mask")
    rgb = astronaut()
    camera, frame = Camera(ros, f"{NS}/camera"), rgb_to_image(rgb, Header())
    raw = voc_perception.run(rgb, None).tags
    sec = int(time.time()) + 600  # after every stamp so far: only the change may start over
    try:
        assert set_parameter(ros, NS, "temporal.min_frames", 2).successful
        first = send_and_answer(ros, camera, frame, tags, sec)
        mask = answer_for(masks, Time(sec=sec))
        assert first.tags == [] and not np.frombuffer(bytes(mask.data), np.uint8).any()  # background
        np.testing.assert_allclose(first.scores, raw.scores, rtol=0, atol=1e-5)  # smoothed = the first
        second = send_and_answer(ros, camera, frame, tags, sec + 1)
        assert labels(second.tags) == labels(raw.tags)
    finally:
        assert set_parameter(ros, NS, "temporal.min_frames", SETTINGS.min_frames).successful
    assert send_and_answer(ros, camera, frame, tags, sec + 2).tags == []  # started over


def test_no_smoothing_no_run_and_no_hysteresis_give_the_tags_of_temporal_off(ros, stable_tagger):
    tags = ros.collect(TagArray, f"{NS}/tags")
    camera, frame = Camera(ros, f"{NS}/camera"), rgb_to_image(astronaut()[:, ::-1].copy(), Header())
    sec = int(time.time()) + 700
    try:
        for name, value in (("temporal.alpha", 1.0), ("temporal.min_frames", 1), ("temporal.release", 1.0)):
            assert set_parameter(ros, NS, name, value).successful
        on = send_and_answer(ros, camera, frame, tags, sec)
        assert set_parameter(ros, NS, "temporal.enabled", False).successful
        off = send_and_answer(ros, camera, frame, tags, sec + 1)
    finally:
        for name, value in (("temporal.enabled", True), ("temporal.alpha", SETTINGS.alpha),
                            ("temporal.min_frames", SETTINGS.min_frames),
                            ("temporal.release", SETTINGS.release)):
            assert set_parameter(ros, NS, name, value).successful
    assert on.tags and [(t.class_id, t.label, t.score) for t in on.tags] == \
        [(t.class_id, t.label, t.score) for t in off.tags]
    assert list(on.scores) == list(off.scores)
