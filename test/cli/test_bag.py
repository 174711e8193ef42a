"""`tagclip bag` as a user runs it: real rosbag2 files (mcap and sqlite3) written with rosbags,
the verb as a separate process (in this one for its refusals), the output read back with the
package's message definitions."""
from __future__ import annotations

import json
import os
import subprocess

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from tagclip_ros.core import read_image
from tagclip_ros.core.detections import DEFAULT_MIN_AREA, regions
from tagclip_ros.core.tags import Tag
from tagclip_ros.core.temporal import StableTags, TemporalSettings

from ..conftest import IMAGES, WEIGHTS
from . import helpers

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
T0 = 1_700_000_000_000_000_000  # log time of the first message, ns


def run_cli(*args: str, cache: str) -> subprocess.CompletedProcess:
    return helpers.run_cli(*args, "--weights", WEIGHTS, "--device", "cpu", cache=cache)


@pytest.fixture(scope="module")
def store():
    from tagclip_ros.node.bags import package_typestore
    return package_typestore()


def frames() -> list[np.ndarray]:
    """Two small real photographs (RGB)."""
    return [cv2.resize(read_image(os.path.join(IMAGES, name)), (96, 64), interpolation=cv2.INTER_AREA)
            for name in ("chelsea.jpg", "coffee.jpg")]


def header(store, stamp: int, frame_id: str):
    types = store.types
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id=frame_id)


def raw_image(store, rgb: np.ndarray, encoding: str, stamp: int, frame_id: str):
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    pixels = np.ascontiguousarray(pixels)
    channels = 1 if pixels.ndim == 2 else 3
    return store.types["sensor_msgs/msg/Image"](
        header=header(store, stamp, frame_id), height=pixels.shape[0], width=pixels.shape[1],
        encoding=encoding, is_bigendian=0, step=pixels.shape[1] * channels,
        data=pixels.reshape(-1).view(np.uint8))


def jpeg_image(store, rgb: np.ndarray, stamp: int, frame_id: str, data: bytes | None = None):
    if data is None:
        data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    return store.types["sensor_msgs/msg/CompressedImage"](
        header=header(store, stamp, frame_id), format="jpeg", data=np.frombuffer(data, np.uint8))


def decoded(store, topic: str, msg) -> np.ndarray:
    """The RGB pixels of an input frame, decoded without the package's conversions."""
    if topic.endswith("compressed"):
        return cv2.cvtColor(cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    pixels = np.asarray(msg.data).reshape(msg.height, msg.width, -1)
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def write_bag(store, path: str, storage: str) -> dict:
    """A bag with rgb8, bgr8, mono8 and JPEG camera topics (two frames each), a non-image
    topic, a corrupt JPEG frame and a raw frame with a wrong step. Returns {(topic, log time): message} of the good frames."""
    good, plan = frames(), []
    for i, rgb in enumerate(good):
        t = T0 + i * 10**8
        plan += [("/robot/cam/image_raw", raw_image(store, rgb, "rgb8", t + 1, "cam"), t + 5),
                 ("/robot/bgr/image", raw_image(store, rgb, "bgr8", t + 2, "bgr"), t + 6),
                 ("/robot/mono/image", raw_image(store, rgb, "mono8", t + 3, "mono"), t + 7),
                 ("/robot/jpeg/image_raw/compressed", jpeg_image(store, rgb, t + 4, "jpeg"), t + 8)]
    corrupt = jpeg_image(store, good[0], T0 + 3 * 10**8, "jpeg", b"\xff\xd8 not a jpeg")
    short = raw_image(store, good[0], "rgb8", T0 + 4 * 10**8, "cam")
    short.step = short.width  # one byte per rgb8 pixel: a wrong step
    bad = [("/robot/jpeg/image_raw/compressed", corrupt, T0 + 3 * 10**8),
           ("/robot/cam/image_raw", short, T0 + 4 * 10**8)]
    plan += bad
    status = store.types["std_msgs/msg/String"](data="battery ok")
    plan.append(("/robot/status", status, T0 + 50))
    write_plan(store, path, plan, storage)
    return {(topic, log_time): msg for topic, msg, log_time in plan
            if "Image" in msg.__msgtype__ and all(msg is not b[1] for b in bad)}


def write_plan(store, path: str, plan: list[tuple], storage: str = "mcap") -> None:
    """A bag at `path` holding each (topic, message, log time) of `plan`, in log-time order."""
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        connections = {}
        for topic, msg, _ in plan:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=store)
        for topic, msg, log_time in sorted(plan, key=lambda p: p[2]):
            writer.write(connections[topic], log_time, store.serialize_cdr(msg, msg.__msgtype__))


def read_bag(path: str) -> tuple[dict, list]:
    """Connections by topic and every (topic, log time, raw bytes), in the bag's order."""
    with Reader(path) as reader:
        connections = {c.topic: c for c in reader.connections}
        messages = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        return connections, messages


def classify_pixels(pixels: list[np.ndarray], folder, cache: str) -> list[list[float]]:
    """Scores `tagclip classify` gives for these pixels (saved losslessly as PNG)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, rgb in enumerate(pixels):
        paths.append(os.path.join(folder, f"{i:03d}.png"))
        cv2.imwrite(paths[-1], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = os.path.join(folder, "scores.json")
    done = run_cli("classify", *paths, "--json", out, cache=cache)
    assert done.returncode == 0, done.stderr
    with open(out, encoding="utf-8") as f:
        return [r["scores"] for r in json.load(f)["results"]]


def segment_pixels(folder, tag_arrays: list, cache: str) -> list[np.ndarray]:
    """Label masks `tagclip segment` writes for the PNGs `classify_pixels` saved, with the tags
    of `tag_arrays` (class id = vocabulary index + 1)."""
    split = os.path.join(folder, "tags.txt")
    with open(split, "w", encoding="utf-8") as f:
        for i, tags in enumerate(tag_arrays):
            ids = sorted(t.class_id - 1 for t in tags.tags)
            f.write(" ".join([f"{i:03d}", *map(str, ids)]) + "\n")
    out = os.path.join(folder, "masks")
    done = run_cli("segment", "--split", split, "--img-root", str(folder), "--ext", ".png", "--out", out,
                   "--vocab", "voc", cache=cache)
    assert done.returncode == 0, done.stderr
    return [np.asarray(Image.open(os.path.join(out, f"{i:03d}.png"))) for i in range(len(tag_arrays))]


def regions_of(mask: np.ndarray, tags) -> list[tuple]:
    """core.detections.regions of a label mask and a TagArray's tags, as `detected` gives them."""
    found = regions(mask, [Tag(t.class_id - 1, t.label, t.score) for t in tags.tags], DEFAULT_MIN_AREA)
    return [(r.id, r.label, np.float32(r.score), r.center, r.size) for r in found]


def detected(detections) -> list[tuple]:
    """A Detection2DArray's (id, label, score, centre, size), each with one result."""
    out = []
    for d in detections.detections:
        [result] = d.results
        out.append((d.id, result.hypothesis.class_id, np.float32(result.hypothesis.score),
                    (d.bbox.center.position.x, d.bbox.center.position.y), (d.bbox.size_x, d.bbox.size_y)))
    return out


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_bag_is_copied_and_tagged(storage, store, tmp_path, text_cache_dir):
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    frames_in = write_bag(store, source, storage)

    done = run_cli("bag", source, "--out", target, "--vocab", "voc", "--overlay", cache=text_cache_dir)

    assert done.returncode == 1, done.stderr  # the two bad frames
    assert "corrupt or undecodable" in done.stderr and "step 96 is smaller" in done.stderr
    for topic, at in (("/robot/jpeg/image_raw/compressed", "1700000000.300000000"),
                      ("/robot/cam/image_raw", "1700000000.400000000")):
        assert f"skipping frame: {topic} at log time {at} s: " in done.stderr  # which frame
    assert "2 of 10 frames could not be decoded" in done.stderr and "Traceback" not in done.stderr
    with open(os.path.join(target, "metadata.yaml"), encoding="utf-8") as f:
        assert yaml.safe_load(f)["rosbag2_bagfile_information"]["storage_identifier"] == storage
    in_connections, in_messages = read_bag(source)
    out_connections, out_messages = read_bag(target)
    # every input message unchanged, in order, with the same connection metadata
    copied = [m for m in out_messages if m[0] in in_connections]
    assert copied == in_messages
    for topic, connection in in_connections.items():
        assert (out_connections[topic].msgtype, out_connections[topic].msgdef) == \
            (connection.msgtype, connection.msgdef)
    # per good frame: tags, classification, label_mask, overlay and detections with its header and log time
    outputs = {}
    for topic, log_time, raw in out_messages:
        if topic not in in_connections:
            msg = store.deserialize_cdr(raw, out_connections[topic].msgtype)
            outputs.setdefault(topic, []).append((log_time, msg))
    spaces = ["/robot/cam", "/robot/bgr", "/robot/mono", "/robot/jpeg"]
    assert set(outputs) == {f"{s}/{n}" for s in spaces for n in
                            ("tags", "classification", "label_mask", "overlay", "label_info", "detections")}
    pixels, tag_arrays, masks, boxes = [], [], [], 0
    for (topic, log_time), msg in sorted(frames_in.items(), key=lambda kv: kv[0][1]):
        space = "/" + "/".join(topic.strip("/").split("/")[:2])
        found = {}
        for name in ("tags", "classification", "label_mask", "overlay", "detections"):
            matches = [m for t, m in outputs[f"{space}/{name}"] if t == log_time]
            assert len(matches) == 1, (topic, name)
            assert matches[0].header == msg.header
            found[name] = matches[0]
        mask = found["label_mask"]
        assert (mask.height, mask.width, mask.encoding) == (64, 96, "mono8")
        tags = found["tags"]
        assert [(h.class_id, h.score) for h in found["classification"].results] == \
            [(t.label, pytest.approx(t.score, abs=1e-12)) for t in tags.tags]
        pixels.append(decoded(store, topic, msg))
        tag_arrays.append(tags)
        masks.append(np.frombuffer(bytes(mask.data), np.uint8).reshape(64, 96))
        assert detected(found["detections"]) == regions_of(masks[-1], tags)
        assert all(d.header == msg.header for d in found["detections"].detections)
        boxes += len(found["detections"].detections)
    assert boxes > 0
    for space in spaces:
        [(log_time, info)] = outputs[f"{space}/label_info"]
        assert info.class_map[0].class_name == "background" and len(info.class_map) == 21
    expected = classify_pixels(pixels, tmp_path / "png", text_cache_dir)
    for tags, scores in zip(tag_arrays, expected):
        np.testing.assert_allclose(tags.scores, scores, rtol=0, atol=1e-6)
    # the bag's label masks are what `tagclip segment` gives for the same pixels and tags
    for mask, segmented in zip(masks, segment_pixels(tmp_path / "png", tag_arrays, text_cache_dir)):
        assert np.mean(mask == segmented) >= 0.999


def run_refused(*args: str, cache: str, capsys) -> str:
    """`tagclip bag ARGS` refused before any work, run in this process as the usage errors
    are (a subprocess would spend seconds importing torch): its stderr."""
    return helpers.refused_in_process("bag", *args, "--weights", WEIGHTS, "--device", "cpu",
                                      "--cache-dir", cache, capsys=capsys)


def test_existing_output_is_refused_and_topics_are_checked(store, tmp_path, text_cache_dir, capsys):
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_bag(store, source, "mcap")
    os.makedirs(target)

    refused = run_refused(source, "--out", target, cache=text_cache_dir, capsys=capsys)
    assert "exists" in refused and "--overwrite" in refused
    missing = run_refused(source, "--out", target, "--overwrite", "--topic", "/nope",
                          cache=text_cache_dir, capsys=capsys)
    assert "/nope" in missing and len(missing.strip().splitlines()) == 1 and "Traceback" not in missing
    only = run_cli("bag", source, "--out", target, "--overwrite", "--no-masks", "--method", "dmar",
                   "--topic", "/robot/mono/image", cache=text_cache_dir)
    assert only.returncode == 0, only.stderr
    out_connections, _ = read_bag(target)
    added = set(out_connections) - set(read_bag(source)[0])
    assert added == {"/robot/mono/tags", "/robot/mono/classification", "/robot/mono/label_info"}
    assert not os.path.exists(target + ".partial")
    first = read_bag(target)[1]
    again = run_cli("bag", source, "--out", target, "--overwrite", "--no-masks", "--method", "dmar",
                    "--topic", "/robot/mono/image", cache=text_cache_dir)
    assert again.returncode == 0, again.stderr
    assert read_bag(target)[1] == first  # the same bytes: no unset CDR padding in the outputs


def test_temporal_gives_each_topic_the_stable_tags_of_its_own_frames(
        store, tmp_path, text_cache_dir, voc_tagger):
    """With --temporal, each image topic's tags are core.temporal's StableTags fed that topic's
    frames alone, in order, by their header stamps: front flickers between the astronaut (A)
    and its mirror image (B, with a class A lacks), then shows B after a gap longer than
    --temporal-reset-after, which starts it over; left, interleaved, shows B throughout."""
    a = cv2.resize(read_image(os.path.join(IMAGES, "astronaut.jpg")), (160, 112),
                   interpolation=cv2.INTER_AREA)
    pictures = {"A": a, "B": np.ascontiguousarray(a[:, ::-1])}
    sequence, gap_at = "AAA" + "BA" * 3 + "BBBB", 9
    stamps = [T0 + i * 10**8 + (10**9 if i >= gap_at else 0) for i in range(len(sequence))]
    plan = []
    for stamp, name in zip(stamps, sequence):
        plan += [("/front/image_raw", raw_image(store, pictures[name], "rgb8", stamp, "front"), stamp),
                 ("/left/image_raw", raw_image(store, pictures["B"], "rgb8", stamp, "left"), stamp + 1)]
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    write_plan(store, source, plan)
    settings = TemporalSettings(min_frames=2, reset_after=0.5)

    done = run_cli("bag", source, "--out", target, "--vocab", "voc", "--no-masks", "--temporal",
                   "--temporal-min-frames", "2", "--temporal-reset-after", "0.5", cache=text_cache_dir)

    assert done.returncode == 0, done.stderr
    connections, messages = read_bag(target)
    factor = voc_tagger.settings.tag_threshold
    for space, names in (("/front", sequence), ("/left", "B" * len(sequence))):
        written = [store.deserialize_cdr(raw, connections[topic].msgtype)
                   for topic, _, raw in messages if topic == f"{space}/tags"]
        stable, raw_tags = StableTags(settings), []
        for tags, stamp, name in zip(written, stamps, names, strict=True):
            result = voc_tagger.classify(pictures[name])
            raw_tags.append([t.label for t in result.tags])
            expected = stable.update(result, factor, stamp * 1e-9)
            assert [(t.class_id - 1, t.label) for t in tags.tags] == \
                [(t.index, t.label) for t in expected.tags], (space, stamp)
            np.testing.assert_allclose(tags.scores, expected.scores, rtol=0, atol=1e-5)
        if space == "/front":
            published = [[t.label for t in tags.tags] for tags in written]
            assert "dog" in raw_tags[3] and "dog" not in raw_tags[4]  # TagCLIP alone flickers
            assert not any("dog" in tagged for tagged in published[:gap_at]), published
            assert published[gap_at] == []  # after the gap: a new stream, no class has 2 frames
            assert all("dog" in tagged for tagged in published[gap_at + 1:]), published


def test_temporal_options_need_temporal(store, tmp_path, text_cache_dir, capsys):
    source = str(tmp_path / "in")
    write_bag(store, source, "mcap")
    refused = run_refused(source, "--out", str(tmp_path / "out"), "--temporal-alpha", "0.3",
                          cache=text_cache_dir, capsys=capsys)
    assert refused.strip() == "error: --temporal-alpha applies only with --temporal (stable tags)"
    out_of_range = run_refused(source, "--out", str(tmp_path / "out"), "--temporal",
                               "--temporal-release", "1.5", cache=text_cache_dir, capsys=capsys)
    assert "temporal.release must lie in [0, 1], not 1.5" in out_of_range
    assert not os.path.exists(tmp_path / "out")
