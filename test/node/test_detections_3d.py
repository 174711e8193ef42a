"""`detections_3d` over DDS: a tagger with depth.enabled, fed a colour image, an aligned depth
image (a plane at a known depth, 16UC1 or 32FC1) and a CameraInfo with known intrinsics. The
node's segmentation decides the regions, so the truth comes from the label mask it published
for the same frame: on a plane at depth z every region's centre is (median column - cx) z / fx,
(median row - cy) z / fy, z. Each kind of unusable depth skips only that frame's 3D.

The tests share one node and run in file order: the first needs the node before any
camera_info and without a detections_3d subscriber."""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from tagclip_ros.core import read_image
from tagclip_ros.core.detections import regions
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import Client, wait_until

from ..conftest import IMAGES, WEIGHTS
from .conftest import ANSWER_S, RESEND_S, started_tagger
from .test_tagger_node import diagnostics_values

NS = "/depth3d"
HEIGHT, WIDTH = 120, 160
FX, FY, CX, CY = 150.0, 155.0, 79.5, 59.5
MIN_AREA, MIN_POINTS = 0.001, 50  # the node's defaults
MS = 1_000_000
STAMPS = itertools.count(100)  # each frame its own second: earlier depth images never pair


@pytest.fixture(scope="module")
def tagger(ros, tmp_path_factory, text_cache_dir):
    log = str(tmp_path_factory.mktemp("logs") / "depth3d.log")
    process = started_tagger(ros, NS, log, {
        "model.weights": WEIGHTS, "device": "cpu", "text_cache_dir": text_cache_dir,
        "diagnostics_period": 0.5, "depth.enabled": True, "image_qos": "reliable"})
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


class Rig:
    """The test's camera: colour, depth and camera_info publishers (reliable, as the node
    subscribes with image_qos reliable), and what the node publishes."""

    def __init__(self, ros: Client) -> None:
        self.ros = ros
        self.publishers = {name: ros.node.create_publisher(kind, f"{NS}/{name}", 10) for name, kind in
                           (("camera", Image), ("depth", Image), ("camera_info", CameraInfo))}
        for name, publisher in self.publishers.items():
            wait_until(lambda: publisher.get_subscription_count() > 0, 30, f"the node on {name}")
        self.tags = ros.collect(TagArray, f"{NS}/tags")
        self.masks = ros.collect(Image, f"{NS}/label_mask")
        self.detections = ros.collect(Detection2DArray, f"{NS}/detections")
        self.diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
        self.boxes: list[Detection3DArray] | None = None  # subscribed by watch_3d
        self.colour = rgb_to_image(cv2.resize(read_image(os.path.join(IMAGES, "chelsea.jpg")),
                                              (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), Header())

    def watch_3d(self) -> list[Detection3DArray]:
        if self.boxes is None:
            self.boxes = self.ros.collect(Detection3DArray, f"{NS}/detections_3d")
        return self.boxes

    def publish(self, name: str, msg: Any, stamp: int) -> None:
        msg.header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                            frame_id="camera_color_optical_frame")
        self.publishers[name].publish(msg)

    def send_info(self) -> None:
        self.publish("camera_info", CameraInfo(height=HEIGHT, width=WIDTH, distortion_model="plumb_bob",
                                               k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]), 0)

    def frame(self, sec: int, depth: list[tuple[Image, int]]) -> None:
        """Depth images (each with its stamp's offset in ns from the frame's), then the frame."""
        for msg, offset in depth:
            self.publish("depth", msg, sec * 10**9 + offset)
        self.publish("camera", self.colour, sec * 10**9)

    def status(self) -> dict[str, str]:
        return wait_until(lambda: diagnostics_values(self.diagnostics, NS), 30, "/diagnostics")

    def answered(self, depth: list[tuple[Image, int]], found: Callable[[int], Any], what: str) -> int:
        """Send a frame, and a new one every RESEND_S while `found(sec)` is falsy for all sent
        (a subscription new to the node may miss a frame); the second that was answered."""
        sent = [next(STAMPS)]
        self.frame(sent[0], depth)
        last = time.monotonic()

        def check() -> int | None:
            nonlocal last
            done = next((sec for sec in sent if found(sec)), None)
            if done is None and time.monotonic() - last > RESEND_S:
                sent.append(next(STAMPS))
                self.frame(sent[-1], depth)
                last = time.monotonic()
            return done
        return wait_until(check, ANSWER_S, what)


@pytest.fixture(scope="module")
def rig(ros, tagger) -> Rig:
    return Rig(ros)


def depth_image(metres: np.ndarray, encoding: str) -> Image:
    pixels = {"16UC1": lambda: np.round(metres * 1000).astype("<u2"),
              "32FC1": lambda: metres.astype("<f4")}[encoding]()
    return Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
                 step=pixels.shape[1] * pixels.itemsize, data=pixels.tobytes())


def plane(z: float, encoding: str, size: tuple[int, int] = (HEIGHT, WIDTH)) -> Image:
    return depth_image(np.full(size, z, np.float32), encoding)


def at(messages: list, sec: int) -> Any:
    return next((m for m in list(messages) if m.header.stamp == Time(sec=sec)), None)


def skipped(rig: Rig) -> int:
    return int(rig.status()["depth_skipped"])


def test_no_3d_without_a_subscriber_and_none_without_camera_info(rig, tagger):
    # nobody watches detections_3d: nothing is computed, so nothing is skipped
    processed = int(rig.status()["frames_processed"])
    sec = rig.answered([(plane(1.5, "16UC1"), 0)], lambda s: at(rig.tags, s), "tags, unwatched")
    wait_until(lambda: int(rig.status()["frames_processed"]) > processed, 30, "the frame counted")
    assert skipped(rig) == 0
    # watched, but no camera_info has come: that frame's 3D is skipped, its 2D outputs are not
    boxes = rig.watch_3d()
    sec = rig.answered([(plane(1.5, "16UC1"), 0)], lambda s: at(rig.tags, s) and skipped(rig) >= 1,
                       "the frame without camera_info counted")
    reason = "no camera_info has arrived yet"
    assert rig.status()["last_depth_skip"] == reason
    assert at(boxes, sec) is None
    wait_until(lambda: at(rig.detections, sec), ANSWER_S, "detections of the frame without 3D")
    wait_until(lambda: f"no detections_3d for the frame stamped {sec}.000000000: {reason}" in tagger.log(),
               30, "the warning in the log")


def nan_and_infinite() -> np.ndarray:
    metres = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    metres[:, ::3], metres[:, 1::3] = np.inf, -np.inf
    return metres


# depth image, its stamp's offset, the reason, whether its warning is logged (the same kind of
# reason again within LOG_THROTTLE_S is not)
BAD_DEPTH = {
    "another aspect ratio": (plane(1.5, "16UC1", (HEIGHT, HEIGHT)), 0,
                             "depth is 120×120 and the image 160×120: another aspect ratio, so not "
                             "registered to it", True),
    "another encoding": (Image(height=HEIGHT, width=WIDTH, encoding="mono8", step=WIDTH,
                               data=bytes(HEIGHT * WIDTH)), 0,
                         "depth encoding 'mono8' is none of 16UC1, mono16, 32FC1 (16-bit "
                         "millimetres or 32-bit float metres)", True),
    "all zero": (plane(0.0, "16UC1"), 0,
                 "the depth image has no valid pixel (all zero, NaN or infinite)", True),
    "NaN and infinite": (depth_image(nan_and_infinite(), "32FC1"), 0,
                         "the depth image has no valid pixel (all zero, NaN or infinite)", False),
    "none within max_delay": (plane(1.5, "32FC1"), 200 * MS,
                              "no depth image within 0.05 s of the frame (the nearest is 0.200 s away)",
                              True),
}


def test_unusable_depth_skips_that_frames_3d_only(rig, tagger):
    rig.send_info()
    boxes = rig.watch_3d()
    for case, (depth, offset, reason, logged) in BAD_DEPTH.items():
        before = skipped(rig)
        sec = rig.answered([(depth, offset)], lambda s: at(rig.tags, s) and skipped(rig) > before,
                           f"{case}: the frame counted")
        assert rig.status()["last_depth_skip"] == reason, case
        wait_until(lambda: at(rig.detections, sec), ANSWER_S, f"{case}: detections")
        assert at(boxes, sec) is None, case
        if logged:
            line = f"no detections_3d for the frame stamped {sec}.000000000: {reason}"
            wait_until(lambda: line in tagger.log(), 30, f"{case}: the warning in the log")


@pytest.mark.parametrize("z, encoding, size", [
    (1.5, "16UC1", (HEIGHT, WIDTH)), (2.25, "32FC1", (HEIGHT, WIDTH)),
    (3.0, "16UC1", (HEIGHT // 2, WIDTH // 2))], ids=["16UC1", "32FC1", "half-size 16UC1"])
def test_centres_lie_within_a_centimetre_of_the_truth(rig, z, encoding, size):
    rig.send_info()
    boxes = rig.watch_3d()
    before = skipped(rig)
    # the nearest depth image is 10 ms after the frame; another, 45 ms before, is farther
    depth = [(plane(9.0, encoding, size), -45 * MS), (plane(z, encoding, size), 10 * MS)]
    sec = rig.answered(depth, lambda s: at(boxes, s), "detections_3d")
    found, tags = at(boxes, sec), wait_until(lambda: at(rig.tags, sec), ANSWER_S, "tags")
    mask = wait_until(lambda: at(rig.masks, sec), ANSWER_S, "label_mask")
    assert found.header == tags.header
    mask = np.frombuffer(bytes(mask.data), np.uint8).reshape(HEIGHT, WIDTH)
    truth = {r.id: r for r in regions(mask, tags.tags, MIN_AREA) if r.area >= MIN_POINTS}
    assert truth and sorted(d.id for d in found.detections) == sorted(truth)
    for detection in found.detections:
        region = truth[detection.id]
        rows, cols = region.pixels()
        expected = [(np.median(cols) - CX) * z / FX, (np.median(rows) - CY) * z / FY, z]
        position, size_m = detection.bbox.center.position, detection.bbox.size
        assert np.abs(np.array([position.x, position.y, position.z]) - expected).max() < 0.01, detection.id
        assert abs(size_m.z) < 0.01  # a plane facing the camera
        assert detection.bbox.center.orientation.w == 1.0
        [result] = detection.results
        assert (result.hypothesis.class_id, result.hypothesis.score) == (region.label, region.score)
    assert skipped(rig) == before
