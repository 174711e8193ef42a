"""`image_source` as a real process over DDS: a video written by OpenCV arrives frame by frame, in
order, raw and compressed, stamped with the current time; loop restarts it; bad sources exit
with one sentence; it loads no model library."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from tagclip_ros.node.conversions import compressed_to_rgb, image_to_rgb
from tagclip_ros.node.harness import Client, stop_process, wait_until

from ..conftest import MODEL_LIBRARIES, REPO
from ..core.test_frames import FRAMES, frame_index, write_video

IMAGE_SOURCE = os.path.join(os.path.dirname(sys.executable), "image_source")
START_S = 120  # starting on a busy 2-core machine
RATE = 10.0
# Transient-local: a pass's first frame reaches this subscription even when it matches the
# publisher only after image_source has seen it (discovery is not symmetric on a busy machine).
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return write_video(str(tmp_path_factory.mktemp("video") / "clip.avi"))


class Received:
    """Messages of one topic with the wall-clock time each reached the test."""

    def __init__(self, ros: Client, msg_type: type, topic: str) -> None:
        self.items: list[tuple[object, float]] = []
        ros.node.create_subscription(msg_type, topic, lambda m: self.items.append((m, time.time())),
                                     RELIABLE)

    def __len__(self) -> int:
        return len(self.items)


def start(namespace: str, log: str, **params) -> subprocess.Popen:
    command = [IMAGE_SOURCE, "--ros-args", "-r", f"__ns:={namespace}"]
    for name, value in params.items():
        command += ["-p", f"{name}:={value}"]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def pixels(msg: Image | CompressedImage):
    """RGB pixels, decoded as the tagger decodes its input."""
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


def stamp_seconds(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_a_video_played_once_arrives_whole_in_order_with_current_stamps(ros, video, tmp_path,
                                                                       compressed):
    namespace = f"/once_{'jpeg' if compressed else 'raw'}"
    msg_type, topic = (CompressedImage, "image/compressed") if compressed else (Image, "image")
    received = Received(ros, msg_type, f"{namespace}/{topic}")
    log = str(tmp_path / "source.log")
    started = time.time()
    process = start(namespace, log, source=video, loop="false", paced="false", rate=RATE,
                    compressed=str(compressed).lower(), frame_id="test_cam")
    try:
        wait_until(lambda: process.poll() is not None, START_S, "image_source to finish its pass")
    finally:
        stop_process(process, log)
    finished = time.time()
    assert process.returncode == 0, read(log)
    wait_until(lambda: len(received) >= FRAMES, 10, f"{FRAMES} frames")
    messages = [m for m, _ in received.items]
    assert [frame_index(pixels(m)) for m in messages] == list(range(FRAMES))
    assert all(m.header.frame_id == "test_cam" for m in messages)
    assert all(pixels(m).shape == (48, 64, 3) for m in messages)
    if compressed:
        assert all(m.format == "jpeg" for m in messages)
    else:
        assert all(m.encoding == "rgb8" for m in messages)
    stamps = [stamp_seconds(m) for m in messages]
    assert all(a < b for a, b in zip(stamps, stamps[1:])), stamps
    assert started <= stamps[0] and stamps[-1] <= finished
    assert all(stamp <= arrival for stamp, (_, arrival) in zip(stamps, received.items))
    assert "Traceback" not in read(log)


def test_loop_plays_the_video_again_until_stopped(ros, video, tmp_path):
    received = Received(ros, Image, "/looped/image")
    log = str(tmp_path / "source.log")
    process = start("/looped", log, source=video, paced="false", rate=2 * RATE)
    try:
        wait_until(lambda: len(received) >= FRAMES + 3 or process.poll() is not None, START_S,
                   "a second pass of the video")
    finally:
        code = stop_process(process, log)
    assert code == 0, read(log)
    indices = [frame_index(image_to_rgb(m)) for m, _ in received.items]
    assert len(indices) >= FRAMES + 3, read(log)
    # In order and around again. The first frames may go before this subscriber has matched
    # the publisher (on a busy machine, discovery is not symmetric): where it starts is free.
    assert indices == [(indices[0] + i) % FRAMES for i in range(len(indices))]
    assert "Traceback" not in read(log)


@pytest.mark.parametrize("source, params, words", [
    ("{tmp}/missing.mp4", {}, "no such file or folder"),
    ("{tmp}/text.avi", {}, "is not a video OpenCV can read"),
    ("/dev/video99", {}, "there is no camera at /dev/video99"),
    ("{video}", {"rate": 0}, "rate must be a positive number"),
    ("{video}", {"loop": "maybe"}, "loop must be true or false, not the text 'maybe'"),
], ids=["missing file", "unreadable video", "absent camera", "zero rate", "wrong type"])
def test_a_bad_source_exits_non_zero_with_one_sentence(ros, tmp_path, video, source, params,
                                                       words):
    (tmp_path / "text.avi").write_text("not a video\n")
    source = source.format(tmp=tmp_path, video=video)
    command = [IMAGE_SOURCE, "--ros-args", "-p", f"source:={source}"]
    for name, value in params.items():
        command += ["-p", f"{name}:={value}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=START_S)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_paced_sends_a_frame_only_once_the_last_ones_tags_came_back(ros, video, tmp_path):
    """paced:=true outside run.sh: this test answers as the tagger would, holding back the tags
    of the first frames; meanwhile no frame may follow (at 10 Hz, 5 would). After the last
    tags, the source exits 0, having printed every frame's tags."""
    from tagclip_ros.msg import Tag, TagArray
    received = Received(ros, Image, "/paced/image")
    answers = ros.node.create_publisher(TagArray, "/paced/tags", RELIABLE)
    log = str(tmp_path / "source.log")
    process = start("/paced", log, source=video, loop="false", paced="true", rate=RATE,
                    resend_after=0)  # held-back tags: no resend may count as a next frame
    try:
        wait_until(lambda: answers.get_subscription_count() > 0, START_S,
                   "image_source's tags subscriber")
        for i in range(FRAMES):
            wait_until(lambda: len(received) > i, START_S, f"frame {i}")
            if i < 2:
                time.sleep(5 / RATE)  # holding the tags back for 5 ticks: absence is the point
                assert len(received) == i + 1, "a frame went out before the last one's tags"
            frame = received.items[i][0]
            answers.publish(TagArray(header=frame.header, scores=[0.5],
                                     tags=[Tag(class_id=1, label=f"f{i}", score=0.5)]))
        wait_until(lambda: process.poll() is not None, START_S, "image_source to finish its pass")
    finally:
        code = stop_process(process, log)
    assert code == 0, read(log)
    assert [frame_index(image_to_rgb(m)) for m, _ in received.items] == list(range(FRAMES))
    printed = [line for line in read(log).splitlines() if ": f" in line]
    assert [line.rsplit(": ", 1)[1] for line in printed] == [f"f{i} (0.5000)" for i in range(FRAMES)]


def test_an_unanswered_frame_is_sent_again_until_its_tags_come_back(ros, video, tmp_path):
    """A best-effort tagger may drop the first frame it gets before it has matched the source.
    This test answers as the tagger would but drops the first frame it receives, and answers a
    frame again each time it comes: the source resends the dropped one with its header (no
    30 s stall) and prints each frame's tags once."""
    from tagclip_ros.msg import Tag, TagArray
    received = Received(ros, Image, "/resent/image")
    answers = ros.node.create_publisher(TagArray, "/resent/tags", RELIABLE)

    def answer(msg: Image) -> None:
        if len(received) > 1:
            index = frame_index(image_to_rgb(msg))
            answers.publish(TagArray(header=msg.header, scores=[0.5],
                                     tags=[Tag(class_id=1, label=f"f{index}", score=0.5)]))
    ros.node.create_subscription(Image, "/resent/image", answer, RELIABLE)
    log = str(tmp_path / "source.log")
    process = start("/resent", log, source=video, loop="false", rate=RATE, resend_after=0.3)
    try:
        wait_until(lambda: process.poll() is not None, START_S, "image_source to finish its pass")
    finally:
        code = stop_process(process, log)
    assert code == 0, read(log)
    assert "going on" not in read(log)
    printed = [line for line in read(log).splitlines() if ": f" in line]
    assert [line.rsplit(": ", 1)[1] for line in printed] == [f"f{i} (0.5000)" for i in range(FRAMES)]
    first = received.items[0][0]
    copies = [m for m, _ in received.items if m.header == first.header]
    assert len(copies) >= 2 and all(bytes(m.data) == bytes(first.data) for m in copies)
    assert [frame_index(image_to_rgb(m)) for m, _ in received.items][-1] == FRAMES - 1


@pytest.mark.parametrize("moment", [0.3, 1.0, "warning"])
def test_ctrl_c_while_it_starts_exits_0_without_a_stack_trace(ros, video, tmp_path, moment):
    """Ctrl-C while modules import (seconds) or while the node is built (parameters read, the
    source opened, the executor made) once ended in a KeyboardInterrupt traceback."""
    log = str(tmp_path / "source.log")
    process = start("/interrupted", log, src=video)  # the typo's warning: the node is being built
    try:
        if moment == "warning":
            wait_until(lambda: "unknown parameter" in read(log) or process.poll() is not None,
                       START_S, "image_source building its node")
        else:
            time.sleep(moment)  # not a wait for anything: the moment of the Ctrl-C
    finally:
        code = stop_process(process, log)
    assert code == 0, read(log)
    assert "Traceback" not in read(log) and "Exception ignored" not in read(log), read(log)


def test_an_unknown_parameter_is_named_with_the_closest_known_one(ros, video, tmp_path):
    """`-p src:=VIDEO` once published samples/ without a word."""
    log = str(tmp_path / "source.log")
    process = start("/typo", log, src=video)
    try:
        wait_until(lambda: "publishing" in read(log) or process.poll() is not None, START_S,
                   "image_source up")  # it warns before that
    finally:
        assert stop_process(process, log) == 0, read(log)
    assert "unknown parameter 'src' ignored; did you mean 'source'?" in read(log)


def test_the_feeder_loads_no_model_library():
    """The feeder runs beside the tagger, on the robot: it costs 70 MB and a third of a second
    to start, not the 900 MB and 5 s of torch and open_clip (it needs neither)."""
    code = ("import json, sys\nimport tagclip_ros.node.image_source\n"
            f"print(json.dumps([m for m in {MODEL_LIBRARIES!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("hang", ["time.sleep(600)", "ctypes.PyDLL(None).sleep(600)"],
                         ids=["releasing the GIL", "holding the GIL"])
def test_a_stop_ends_the_feeder_even_if_its_clean_up_hangs(hang):
    """Ctrl-C sets a deadline (commands.EXIT_DEADLINE_S): a clean-up that never returns cannot
    keep the feeder alive past it, even one stuck in a C call that holds the GIL, where no
    Python timer can run. Fast DDS's TCP transport hangs so in destroy_node (node/exit_timer.py),
    now and then on a loaded machine: SIGINT, and the feeder still there 30 s later."""
    code = (f"import ctypes, time\nfrom tagclip_ros.node import image_source\n"
            f"image_source._stop(2, None)\n{hang}  # a clean-up that never returns\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
