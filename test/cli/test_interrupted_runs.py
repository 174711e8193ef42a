"""Dataset runs lose nothing: `tagclip tag`, `segment`, `overlay` and `bag` killed with SIGKILL
part-way, then run again, give outputs identical to an uninterrupted run's.

Each image verb runs as a real process over a folder of fixture images in which one image, the
third, is a named pipe: the verb finishes the first two images, then blocks opening or reading
the pipe. The test polls for that event (the pipe gains a reader), kills the process with
SIGKILL, turns the pipe into the real image and runs the verb again. So the kill lands at a
known point however busy the machine is. Cuts in the middle of a write are covered by the torn
files each test adds before resuming, and by test/core/test_dataset.py. A bag is one output
built in OUT.partial: its run is killed as soon as that folder appears, seconds before the
frames are all tagged."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

from ..conftest import IMAGES, WEIGHTS
from .helpers import STEMS, model_args, run_cli, run_in_process, snapshot, tag_lines

BLOCKED = STEMS[2]  # astronaut and chelsea are done when the run is killed on coffee
KILL_DEADLINE_S = 600
POLL_S = 0.02
T = TypeVar("T")


def image_folder(root: Path, blocked: str | None = None) -> Path:
    """`root` holding <stem>.jpg links to the fixture images, `blocked`'s as a named pipe."""
    root.mkdir(exist_ok=True)
    for stem in STEMS:
        path = root / f"{stem}.jpg"
        if path.exists() or path.is_symlink():
            path.unlink()
        if stem == blocked:
            os.mkfifo(path)
        else:
            path.symlink_to(os.path.join(IMAGES, f"{stem}.jpg"))
    return root


def run_uninterrupted(*args: str, cache: str, capsys) -> None:
    """`tagclip ARGS` run whole, for the outputs a resumed run must equal: in this process
    (the same code; the killed and resumed runs are the real processes under test)."""
    code, _, err = run_in_process(*args, "--cache-dir", cache, capsys=capsys)
    assert code == 0, err


def cli_command(*args: str, cache: str) -> list[str]:
    """The command line `run_cli` runs."""
    return [sys.executable, "-m", "tagclip_ros.cli", *args, "--cache-dir", cache]


def run_killed_at(pipe: Path, *args: str, cache: str, log_path: Path) -> None:
    """Start `tagclip ARGS` (output to `log_path`) and SIGKILL it once it opens `pipe` (it
    blocks there for input). Fails if it exits, or takes too long, before reaching the pipe."""
    with open(log_path, "w+", encoding="utf-8") as log, \
            subprocess.Popen(cli_command(*args, cache=cache), stdout=log, stderr=log) as process:
        writer = wait_for(lambda: open_writer(pipe), process, log)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        os.close(writer)  # only now: an end of input earlier would let the run carry on
    assert process.returncode == -signal.SIGKILL


def open_writer(pipe: Path) -> int | None:
    """A write end of `pipe` once some process has it open to read, else None (opening a
    pipe's write end without blocking fails while it has no reader)."""
    try:
        return os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        return None


def wait_for(event: Callable[[], T | None], process: subprocess.Popen, log: IO[str]) -> T:
    """Poll `event` until it gives a value; fails if `process` exits first (its output from
    `log`) or the deadline passes."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while (value := event()) is None:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the run ended (exit code {process.returncode}) before the "
                                 f"point to kill it:\n{log.read()}")
        assert time.monotonic() < deadline, "the run never reached the point to kill it"
        time.sleep(POLL_S)
    return value


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden temporaries included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tear(path: Path, keep: int) -> None:
    """Cut a file to its first `keep` bytes, as a writer that is not atomic leaves it."""
    path.write_bytes(path.read_bytes()[:keep])


def stale_temporary(path: Path) -> Path:
    """A temporary such as a run killed inside `atomic_write` leaves beside `path`."""
    temporary = path.parent / f".{path.name}.k1ll3d.partial"
    temporary.write_bytes(b"half a file")
    return temporary


def test_killed_tag_run_resumes_to_the_same_tag_and_scores_files(tmp_path, text_cache_dir, capsys):
    split = tmp_path / "split.txt"
    split.write_text("".join(f"{s}\n" for s in STEMS), encoding="utf-8")

    def tag(root: Path, out: Path) -> tuple[str, ...]:
        return ("tag", "--split", str(split), "--img-root", str(root), "--out", str(out), *model_args())

    reference = tmp_path / "reference"
    reference.mkdir()
    run_uninterrupted(*tag(image_folder(tmp_path / "images"), reference / "tags.txt"), cache=text_cache_dir,
                      capsys=capsys)
    expected = contents(reference)
    assert expected["tags.txt"].decode() == tag_lines()  # the reference tags of the fixtures

    out = tmp_path / "out"
    out.mkdir()
    blocked = image_folder(tmp_path / "blocked", BLOCKED)
    run_killed_at(blocked / f"{BLOCKED}.jpg", *tag(blocked, out / "tags.txt"), cache=text_cache_dir,
                  log_path=tmp_path / "killed.log")
    killed = contents(out)
    reference_lines = {name: data.decode().splitlines(keepends=True) for name, data in expected.items()}
    for name in expected:  # the first two images' lines, whole, nothing else
        assert killed[name].decode() == "".join(reference_lines[name][:2]), name
    # chelsea's scores line loses its newline: its tag line alone does not make it done
    scores = out / "tags.txt.scores.jsonl"
    tear(scores, len(killed[scores.name]) - 1)
    temporary = stale_temporary(out / "tags.txt")

    resumed = run_cli(*tag(image_folder(blocked), out / "tags.txt"), cache=text_cache_dir)

    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 4 images already done" in resumed.stderr
    assert not temporary.exists()
    assert contents(out) == expected


def test_killed_segment_run_resumes_to_the_same_masks_and_cams(tmp_path, text_cache_dir, capsys):
    tags = tmp_path / "tags.txt"
    tags.write_text(tag_lines(), encoding="utf-8")

    def segment(root: Path, out: Path) -> tuple[str, ...]:
        return ("segment", "--split", str(tags), "--img-root", str(root), "--out", str(out),
                "--save-cams", *model_args())

    reference = tmp_path / "reference"
    run_uninterrupted(*segment(image_folder(tmp_path / "images"), reference), cache=text_cache_dir,
                      capsys=capsys)
    expected = contents(reference)
    assert sorted(expected) == sorted(f"{s}{e}" for s in STEMS for e in (".png", ".npy"))

    out = tmp_path / "out"
    blocked = image_folder(tmp_path / "blocked", BLOCKED)
    run_killed_at(blocked / f"{BLOCKED}.jpg", *segment(blocked, out), cache=text_cache_dir,
                  log_path=tmp_path / "killed.log")
    finished = {f"{s}{e}" for s in STEMS[:2] for e in (".png", ".npy")}
    assert contents(out) == {name: expected[name] for name in finished}
    # a whole mask beside a cut CAM file (as a copy cut short leaves it): chelsea is redone
    tear(out / "chelsea.npy", os.path.getsize(out / "chelsea.npy") // 2)
    temporary = stale_temporary(out / "coffee.png")

    resumed = run_cli(*segment(image_folder(blocked), out), cache=text_cache_dir)

    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 4 images already done" in resumed.stderr
    assert not temporary.exists()
    assert contents(out) == expected


def test_killed_overlay_run_resumes_to_the_same_pictures(tmp_path, text_cache_dir, capsys):
    def overlay(root: Path, out: Path) -> tuple[str, ...]:
        return ("overlay", *(str(root / f"{s}.jpg") for s in STEMS), "--out", str(out), *model_args())

    reference = tmp_path / "reference"
    run_uninterrupted(*overlay(image_folder(tmp_path / "images"), reference), cache=text_cache_dir,
                      capsys=capsys)
    expected = contents(reference)
    assert sorted(expected) == sorted(f"{s}_overlay.png" for s in STEMS)

    out = tmp_path / "out"
    blocked = image_folder(tmp_path / "blocked", BLOCKED)
    run_killed_at(blocked / f"{BLOCKED}.jpg", *overlay(blocked, out), cache=text_cache_dir,
                  log_path=tmp_path / "killed.log")
    finished = {f"{s}_overlay.png" for s in STEMS[:2]}
    assert contents(out) == {name: expected[name] for name in finished}
    tear(out / "astronaut_overlay.png", os.path.getsize(out / "astronaut_overlay.png") - 1)

    resumed = run_cli(*overlay(image_folder(blocked), out), cache=text_cache_dir)

    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 4 images already done" in resumed.stderr
    assert contents(out) == expected
    # done: no model needed (a missing checkpoint would fail), nothing rewritten
    before = snapshot(out)
    again = run_cli("overlay", *(str(blocked / f"{s}.jpg") for s in STEMS), "--out", str(out),
                    *model_args("/nonexistent/ViT-B-16.pt"), cache=text_cache_dir)
    assert again.returncode == 0 and "4 of 4 images already done" in again.stderr, again.stderr
    assert snapshot(out) == before


def canonical_messages(bag: Path) -> tuple[list, list]:
    """A bag's connections (topic, type, definition, QoS) and messages (topic, log time,
    payload re-serialised by rosbags). Re-serialising zeroes the CDR padding bytes, which
    rclpy's serializer leaves unset: two uninterrupted runs already differ there."""
    from rosbags.rosbag2 import Reader

    from tagclip_ros.node.bags import package_typestore

    store = package_typestore()
    with Reader(bag) as reader:
        connections = [(c.topic, c.msgtype, c.msgdef, c.ext.offered_qos_profiles)
                       for c in reader.connections]
        messages = [(c.topic, t, bytes(store.serialize_cdr(store.deserialize_cdr(raw, c.msgtype),
                                                          c.msgtype)))
                    for c, t, raw in reader.messages()]
    return connections, messages


def write_camera_bag(path: Path, frames: int) -> None:
    """An mcap bag of `frames` JPEG frames (the fixture images in turn), one a second."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/cam/image/compressed", "sensor_msgs/msg/CompressedImage",
                                           typestore=store)
        for i in range(frames):
            data = Path(IMAGES, f"{STEMS[i % len(STEMS)]}.jpg").read_bytes()
            msg = types["sensor_msgs/msg/CompressedImage"](
                header=types["std_msgs/msg/Header"](
                    stamp=types["builtin_interfaces/msg/Time"](sec=i, nanosec=0), frame_id="cam"),
                format="jpeg", data=np.frombuffer(data, np.uint8))
            writer.write(connection, (i + 1) * 10**9, store.serialize_cdr(msg, msg.__msgtype__))


def test_killed_bag_run_leaves_no_output_and_the_next_run_gives_the_same_bag(
        tmp_path, text_cache_dir, capsys):
    source = tmp_path / "in"
    write_camera_bag(source, frames=8)
    bag = ("bag", str(source), "--vocab", "voc", "--weights", WEIGHTS, "--device", "cpu")

    reference = tmp_path / "reference"
    run_uninterrupted(*bag, "--out", str(reference), cache=text_cache_dir, capsys=capsys)

    out = tmp_path / "out"
    staging = tmp_path / "out.partial"
    with open(tmp_path / "killed.log", "w+", encoding="utf-8") as log, \
            subprocess.Popen(cli_command(*bag, "--out", str(out), cache=text_cache_dir),
                             stdout=log, stderr=log) as process:
        # the bag is being written once its staging folder appears; its 8 frames take seconds
        wait_for(lambda: True if staging.exists() else None, process, log)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "the run finished before it could be killed"
    assert staging.exists()
    (tmp_path / "killed.log").unlink()

    resumed = run_cli(*bag, "--out", str(out), cache=text_cache_dir)

    assert resumed.returncode == 0, resumed.stderr
    assert sorted(os.listdir(tmp_path)) == ["in", "out", "reference"]
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "out.mcap"]
    assert (out / "metadata.yaml").read_text().replace("out.mcap", "reference.mcap") == \
        (reference / "metadata.yaml").read_text()
    assert canonical_messages(out) == canonical_messages(reference)
