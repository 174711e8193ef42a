"""One tagger node serving three cameras (`cameras`), as a real process over DDS: each camera is
answered on its own topics with its own header and the core's scores (one at a time and in
batches); a fast camera does not starve slow ones; a camera that stops and comes back is served
again; a camera's bad frames touch no other; /diagnostics has a status per camera."""
from __future__ import annotations

import math
import os
import threading
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tagclip_ros.core import read_image
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import wait_until

from ..conftest import IMAGES, WEIGHTS
from .conftest import answer_for, started_tagger
from .test_tagger_node import set_parameter

NS = "/multi"
CAMERAS = ("front", "left", "right")
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SMALL = (64, 48)  # the fairness test's frames: quick to tag, so rates, not the CPU, decide


@pytest.fixture(scope="module")
def cameras_tagger(ros, tmp_path_factory, text_cache_dir):
    """A three-camera tagger (reliable image QoS: frames lost in transport would blur what
    the scheduler does)."""
    log = str(tmp_path_factory.mktemp("logs") / "multi.log")
    process = started_tagger(ros, NS, log, {
        "model.weights": WEIGHTS, "device": "cpu", "text_cache_dir": text_cache_dir,
        "image_qos": "reliable", "diagnostics_period": 0.5}, CAMERAS)
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


class Rig:
    """The test's side of the three cameras: a reliable publisher into each `<camera>/image`
    and what comes back on each camera's tags and label_mask."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.publishers = {c: self.publisher(c) for c in CAMERAS}
        self.tags = {c: ros.collect(TagArray, f"{NS}/{c}/tags") for c in CAMERAS}
        self.masks = {c: ros.collect(Image, f"{NS}/{c}/label_mask") for c in CAMERAS}
        self.diagnostics = ros.collect(DiagnosticArray, "/diagnostics")

    def publisher(self, camera: str):
        publisher = self.ros.node.create_publisher(Image, f"{NS}/{camera}/image", RELIABLE)
        wait_until(lambda: publisher.get_subscription_count() > 0, 30, f"the tagger on {camera}/image")
        return publisher

    def send(self, camera: str, msg: Image, sec: int, nanosec: int = 0) -> Time:
        msg.header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=f"{camera}_optical")
        self.publishers[camera].publish(msg)
        return msg.header.stamp

    def statuses(self) -> dict[str, dict[str, str]]:
        """The newest /diagnostics values of the node's status and each camera's, by status
        name (waits for a message with all four)."""
        def complete():
            for array in reversed(list(self.diagnostics)):
                named = {s.name: {kv.key: kv.value for kv in s.values} for s in array.status
                         if s.name.startswith(f"{NS}/tagclip_tagger: ")}
                if len(named) == 1 + len(CAMERAS):
                    return named
            return None
        return wait_until(complete, 30, "the node's and each camera's /diagnostics status")

    def answer(self, camera: str, msg: Image, sec: int) -> TagArray:
        return answer_for(self.tags[camera], self.send(camera, msg, sec),
                          resend=lambda: self.send(camera, msg, sec))


@pytest.fixture(scope="module")
def rig(ros, cameras_tagger) -> Rig:
    return Rig(ros)


def image(name: str, size: tuple[int, int] | None = None, mirrored: bool = False) -> np.ndarray:
    rgb = read_image(os.path.join(IMAGES, name))
    if size is not None:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb


def stamps(messages: list) -> set[tuple[int, int]]:
    return {(m.header.stamp.sec, m.header.stamp.nanosec) for m in list(messages)}


def batched_frames(rig: Rig) -> int:
    return int(rig.statuses()[f"{NS}/tagclip_tagger: inference"]["frames_batched"])


@pytest.mark.parametrize("batching", ["off", "on"])
def test_each_camera_is_answered_on_its_own_topics_with_its_header_and_the_core_scores(
        ros, rig, voc_perception, batching):
    """Sent together, the three frames are worked on in turn (batching off) or, front's and
    left's (of equal size, waiting while right's larger frame is tagged), through the model
    together (on): either way each camera's answer equals the core's for its own frame (1e-4),
    with its header, on its topics only."""
    frames = {"right": image("chelsea.jpg", (448, 320), mirrored=True),
              "front": image("chelsea.jpg", (224, 160)), "left": image("astronaut.jpg", (224, 160))}
    assert set_parameter(ros, NS, "batching", batching).successful
    batched = batched_frames(rig)
    sec = int(time.time()) + (1000 if batching == "on" else 2000)
    nanosec = {c: i + 1 for i, c in enumerate(CAMERAS)}  # a stamp of each camera's own
    sent = {c: rig.send(c, rgb_to_image(rgb, Header()), sec, nanosec[c]) for c, rgb in frames.items()}
    for camera, rgb in frames.items():
        msg = rgb_to_image(rgb, Header())
        answer = answer_for(rig.tags[camera], sent[camera],
                            resend=lambda c=camera, m=msg: rig.send(c, m, sec, nanosec[c]))
        expected = voc_perception.run(rgb, "clipes").tags
        assert answer.header.frame_id == f"{camera}_optical"
        assert [t.label for t in answer.tags] == [t.label for t in expected.tags], camera
        np.testing.assert_allclose(answer.scores, expected.scores, rtol=0, atol=1e-4)
        mask = answer_for(rig.masks[camera], sent[camera])
        assert (mask.height, mask.width, mask.header.frame_id) == (*rgb.shape[:2], f"{camera}_optical")
    for camera in CAMERAS:  # no camera's frame was answered on another camera's topic
        others = set().union(*(stamps(rig.tags[c]) for c in CAMERAS if c != camera))
        assert (sec, nanosec[camera]) not in others, camera
    if batching == "off":
        assert batched_frames(rig) == batched
    else:  # front and left together at least (if resent, possibly more)
        wait_until(lambda: batched_frames(rig) >= batched + 2, 30, "front's and left's frames batched")


def test_a_fast_camera_does_not_starve_two_slow_ones(ros, rig):
    """front at 30 Hz beside left and right at 2 Hz: the slow ones are answered for at least
    90 % of their frames (the newest frame of each camera, cameras in turn)."""
    assert set_parameter(ros, NS, "batching", "off").successful
    msg = rgb_to_image(image("chelsea.jpg", SMALL), Header())
    large = rgb_to_image(image("astronaut.jpg", (160, 112)), Header())  # longer than 1/30 s to tag
    base, slow_frames, stop = int(time.time()) + 3000, 10, threading.Event()

    def fast() -> None:
        i = 0
        while not stop.is_set():
            rig.send("front", large, base, i)
            i += 1
            time.sleep(1 / 30)
    thread = threading.Thread(target=fast, daemon=True)
    thread.start()
    try:
        for i in range(slow_frames):  # 2 Hz: the publishing rate is the test's subject
            for camera in ("left", "right"):
                rig.send(camera, msg, base + 1, i)
            time.sleep(0.5)
        needed = math.ceil(0.9 * slow_frames)
        for camera in ("left", "right"):
            wait_until(lambda c=camera: sum(s == (base + 1, i) for s in stamps(rig.tags[c])
                                            for i in range(slow_frames)) >= needed,
                       60, f"{needed} of {camera}'s {slow_frames} frames answered")
    finally:
        stop.set()
        thread.join()
    assert any(s[0] == base for s in stamps(rig.tags["front"]))  # the fast one is served too


def test_a_camera_that_stops_and_comes_back_is_served_again(ros, rig):
    msg = rgb_to_image(image("astronaut.jpg", SMALL), Header())
    sec = int(time.time()) + 4000
    assert rig.answer("left", msg, sec).header.frame_id == "left_optical"
    ros.node.destroy_publisher(rig.publishers["left"])  # the camera driver exits
    wait_until(lambda: ros.node.count_publishers(f"{NS}/left/image") == 0, 30, "left's publisher gone")
    assert rig.answer("front", msg, sec + 1).header.frame_id == "front_optical"  # the others go on
    rig.publishers["left"] = rig.publisher("left")  # and comes back
    assert rig.answer("left", msg, sec + 2).header.frame_id == "left_optical"


def test_bad_frames_on_one_camera_touch_no_other_and_diagnostics_are_per_camera(ros, rig):
    good = rgb_to_image(image("chelsea.jpg", SMALL), Header())
    bad = rgb_to_image(image("chelsea.jpg", SMALL), Header())
    bad.data = bytes(bad.data)[:-7]  # shorter than height × step
    sec = int(time.time()) + 5000
    before = rig.statuses()
    for i in range(3):
        rig.send("right", bad, sec, i)
        assert rig.answer("front", good, sec + 1 + i).header.frame_id == "front_optical"
        assert rig.answer("left", good, sec + 1 + i).header.frame_id == "left_optical"

    right = f"{NS}/tagclip_tagger: camera right"

    def counted():
        statuses = rig.statuses()
        return statuses if int(statuses[right]["frames_bad"]) >= int(before[right]["frames_bad"]) + 3 else None
    statuses = wait_until(counted, 60, "right's three bad frames counted")
    assert rig.answer("right", good, sec + 10).header.frame_id == "right_optical"  # right works again
    for camera in ("front", "left"):
        values = statuses[f"{NS}/tagclip_tagger: camera {camera}"]
        assert values["camera"] == camera and values["frames_bad"] == "0", values
        assert int(values["frames_processed"]) > 0 and float(values["latency_ms"]) > 0
        assert {"rate_hz", "frames_dropped", "core_ms"} <= values.keys()
    model = statuses[f"{NS}/tagclip_tagger: inference"]
    assert model["cameras"] == "3" and int(model["frames_bad"]) >= 3  # all cameras' frames
