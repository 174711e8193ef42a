"""`tagclip bag --depth TOPIC --camera-info TOPIC` as a user runs it: a bag of a colour camera,
its aligned depth (planes at known depths, 16UC1 and 32FC1, logged before and after their
frames) and its CameraInfo; detections_3d read back and checked against the truth computed from
the bag's own label masks (on a plane at depth z a region's centre is (median column - cx) z /
fx, (median row - cy) z / fy, z)."""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
import pytest

from tagclip_ros.cli import bag
from tagclip_ros.core import read_image
from tagclip_ros.core.depth import DEFAULT_MIN_POINTS
from tagclip_ros.core.detections import DEFAULT_MIN_AREA, regions

from ..conftest import IMAGES
from .test_bag import T0, header, raw_image, read_bag, run_cli, write_plan

HEIGHT, WIDTH = 120, 160
FX, FY, CX, CY = 150.0, 155.0, 79.5, 59.5
MS = 1_000_000
COLOUR, DEPTH, INFO = "/cam/color/image_raw", "/cam/aligned_depth/image_raw", "/cam/color/camera_info"
# per colour frame: the depth plane (metres, encoding), its stamp's and its log time's offsets
# from the frame's, in ns; the last frame's depth is 80 ms off: no 3D for it
PLANES = [(1.5, "16UC1", 10 * MS, 20 * MS), (2.25, "32FC1", -5 * MS, -5 * MS),
          (3.0, "16UC1", 80 * MS, 80 * MS)]


@pytest.fixture(scope="module")
def store():
    from tagclip_ros.node.bags import package_typestore
    return package_typestore()


def depth_image(store, z: float, encoding: str, stamp: int):
    metres = np.full((HEIGHT, WIDTH), z, np.float32)
    pixels = np.round(metres * 1000).astype("<u2") if encoding == "16UC1" else metres.astype("<f4")
    return store.types["sensor_msgs/msg/Image"](
        header=header(store, stamp, "depth"), height=HEIGHT, width=WIDTH, encoding=encoding,
        is_bigendian=0, step=WIDTH * pixels.itemsize, data=pixels.reshape(-1).view(np.uint8))


def camera_info(store):
    types = store.types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header(store, T0, "cam"), height=HEIGHT, width=WIDTH, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0, roi=roi)


def write_bag(store, path: str) -> list[tuple[int, object]]:
    """The bag; returns each colour frame's log time and message."""
    rgb = cv2.resize(read_image(os.path.join(IMAGES, "chelsea.jpg")), (WIDTH, HEIGHT),
                     interpolation=cv2.INTER_AREA)
    plan = [(INFO, camera_info(store), T0)]
    for i, (z, encoding, stamp_offset, log_offset) in enumerate(PLANES):
        t = T0 + (i + 1) * 200 * MS
        plan += [(COLOUR, raw_image(store, rgb, "rgb8", t, "cam"), t),
                 (DEPTH, depth_image(store, z, encoding, t + stamp_offset), t + log_offset)]
    write_plan(store, path, plan)
    return [(log_time, msg) for topic, msg, log_time in plan if topic == COLOUR]


def test_bag_writes_detections_3d_within_a_centimetre_of_the_truth(store, tmp_path, text_cache_dir):
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    frames = write_bag(store, source)

    done = run_cli("bag", source, "--out", target, "--vocab", "voc", "--depth", DEPTH,
                   "--camera-info", INFO, cache=text_cache_dir)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("tagged 3 frames, 0 bad, 1 without detections_3d")
    last = frames[-1][0]
    assert (f"no detections_3d for the frame at log time {last // 10**9}.{last % 10**9:09d} s: no depth "
            "image within 0.05 s of the frame (the nearest is 0.080 s away)") in done.stderr
    in_connections, _ = read_bag(source)
    connections, messages = read_bag(target)
    assert set(connections) - set(in_connections) == {  # the depth topic is not tagged
        f"/cam/color/{name}" for name in
        ("tags", "classification", "label_mask", "label_info", "detections", "detections_3d")}
    out: dict[str, dict[int, object]] = {}
    for topic, log_time, raw in messages:
        if topic not in in_connections:
            out.setdefault(topic, {})[log_time] = store.deserialize_cdr(raw, connections[topic].msgtype)
    assert sorted(out["/cam/color/detections_3d"]) == [log_time for log_time, _ in frames[:2]]
    boxes = 0
    for (log_time, frame), (z, *_) in zip(frames[:2], PLANES):
        found = out["/cam/color/detections_3d"][log_time]
        assert found.header == frame.header
        tags, mask = out["/cam/color/tags"][log_time], out["/cam/color/label_mask"][log_time]
        mask = np.frombuffer(bytes(mask.data), np.uint8).reshape(HEIGHT, WIDTH)
        truth = {r.id: r for r in regions(mask, tags.tags, DEFAULT_MIN_AREA) if r.area >= DEFAULT_MIN_POINTS}
        assert sorted(d.id for d in found.detections) == sorted(truth)
        for detection in found.detections:
            rows, cols = truth[detection.id].pixels()
            expected = [(np.median(cols) - CX) * z / FX, (np.median(rows) - CY) * z / FY, z]
            position = detection.bbox.center.position
            assert np.abs(np.array([position.x, position.y, position.z]) - expected).max() < 0.01
            assert detection.results[0].hypothesis.class_id == truth[detection.id].label
        boxes += len(found.detections)
    assert boxes > 0


@pytest.mark.parametrize("args, words", [
    (["--depth", DEPTH], "--depth and --camera-info go together"),
    (["--camera-info", INFO], "--depth and --camera-info go together"),
    (["--depth", DEPTH, "--camera-info", INFO, "--no-masks"], "--depth needs label masks"),
], ids=["depth alone", "camera_info alone", "no masks"])
def test_depth_options_that_cannot_work_are_one_sentence(args, words, tmp_path):
    """Checked before the bag is read or the model loaded (the verb then exits 2 with it)."""
    parser = argparse.ArgumentParser()
    bag.add_arguments(parser)
    with pytest.raises(ValueError, match=words):
        bag.check_depth(parser.parse_args([str(tmp_path), "--out", str(tmp_path / "out"), *args]))
