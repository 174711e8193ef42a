"""Fuzzing through the running node: generated frames over DDS, every one accounted for.

Two taggers run as real processes (raw input, and compressed input), with DMAR masks so that
label masks are made at every fuzzed size. Frames from test_fuzz.py's generators — mostly
malformed, some well formed — are published one at a time, each waiting for its outcome
before the next, so that the accounting is exact: the node's processed + bad + dropped counters
in /diagnostics grow by one per frame, and a processed frame is answered on `tags` (and
`label_mask`, of the frame's size) with its stamp. At the end both nodes are still running,
exit cleanly on SIGINT and logged no traceback and no unexpected per-frame failure.
"""
from __future__ import annotations

import itertools
import os
import threading
from collections import Counter
from dataclasses import dataclass

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from hypothesis import HealthCheck, Phase, given, settings
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import LabelInfo

from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import FrameError, frame_to_rgb
from tagclip_ros.node.harness import LATCHED, Camera, Client, TaggerProcess, wait_until

from ..conftest import WEIGHTS
from .test_fuzz import CompressedCase, RawCase, compressed_frames, raw_frames

STARTUP_S = 240
OUTCOME_S = 120  # one frame's outcome, on a busy 2-core machine
# Each frame waits for a /diagnostics period (~0.1 s a frame on a 2-core machine), so the suite
# sends a few hundred; a big run sets TAGCLIP_NODE_FUZZ_FRAMES (docs/benchmarks.md).
RAW_CASES = int(os.environ.get("TAGCLIP_NODE_FUZZ_FRAMES", "200"))
COMPRESSED_CASES = RAW_CASES * 4 // 5
# Through the node, each frame costs a DDS round trip and a diagnostics period; well-formed
# frames also an inference. No shrinking: a failure's first example is the report.
NODE_FUZZ = dict(deadline=None, derandomize=True, database=None,
                 phases=[Phase.explicit, Phase.generate],
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STAMPS = itertools.count(20_000)
CASES: Counter[tuple[str, str]] = Counter()  # (namespace, outcome) -> frames


@dataclass
class Counters:
    """The frame counters a tagger reports in /diagnostics."""
    processed: int
    bad: int
    dropped: int

    @property
    def total(self) -> int:
        return self.processed + self.bad + self.dropped


class FuzzedTagger:
    """A tagger process, the camera publishing into it, and what it reports: the latest
    /diagnostics counters and the stamps answered on `tags` and `label_mask`."""

    def __init__(self, ros: Client, tmp_path_factory, text_cache_dir: str, namespace: str,
                 msg_type: type, **params) -> None:
        self.namespace = namespace
        log = str(tmp_path_factory.mktemp("logs") / f"{namespace.strip('/')}.log")
        self.process = TaggerProcess(namespace, log, {
            "model.weights": WEIGHTS, "device": "cpu", "text_cache_dir": text_cache_dir,
            "diagnostics_period": 0.1, "image_qos": "reliable",  # reliable: no frame lost
            "segmentation.method": "dmar", **params})
        self._lock = threading.Lock()
        self.counters: Counters | None = None
        self.reports = 0  # /diagnostics messages received from this tagger
        self.tags: dict[tuple[int, int], TagArray] = {}
        self.masks: dict[tuple[int, int], Image] = {}
        info = ros.collect(LabelInfo, f"{namespace}/label_info", LATCHED)
        ros.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        ros.node.create_subscription(TagArray, f"{namespace}/tags",
                                     lambda m: self._keep(self.tags, m), 50)
        ros.node.create_subscription(Image, f"{namespace}/label_mask",
                                     lambda m: self._keep(self.masks, m), 50)
        wait_until(lambda: info or not self.alive(), STARTUP_S, f"{namespace} tagger start")
        assert self.alive(), self.process.log()
        topic = f"{namespace}/camera" + ("/compressed" if msg_type is CompressedImage else "")
        self.camera = Camera(ros, topic, msg_type)
        wait_until(lambda: self.counters is not None, 30, f"{namespace} /diagnostics")
        self.sent = 0

    def alive(self) -> bool:
        return self.process.process.poll() is None

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self.namespace}/"):
                values = {v.key: v.value for v in status.values}
                with self._lock:
                    self.reports += 1
                    self.counters = Counters(int(values["frames_processed"]),
                                             int(values["frames_bad"]),
                                             int(values["frames_dropped"]))

    def _keep(self, store: dict, msg) -> None:
        with self._lock:
            store[msg.header.stamp.sec, msg.header.stamp.nanosec] = msg

    def latest(self) -> Counters:
        with self._lock:
            return self.counters

    def send(self, msg: Image | CompressedImage) -> tuple[str, TagArray | None, Image | None]:
        """Publish one frame and wait for its outcome: 'answered' (with its tags and mask),
        'bad' or 'dropped'. Fails if the node dies or counts a frame twice."""
        before = self.latest()
        assert before.total == self.sent, (before, self.sent)  # nothing counted twice
        stamp = self.camera.send(msg, next(STAMPS))
        key = (stamp.sec, stamp.nanosec)
        self.sent += 1
        wait_until(lambda: self.latest().total >= self.sent or not self.alive(), OUTCOME_S,
                   f"{self.namespace}: outcome of frame {stamp.sec} in /diagnostics")
        assert self.alive(), f"tagger died on frame {stamp.sec}:\n{self.process.log()[-3000:]}"
        after = self.latest()
        assert after.total == self.sent, (before, after, self.sent)
        if after.processed > before.processed:
            wait_until(lambda: key in self.tags and key in self.masks, OUTCOME_S,
                       f"{self.namespace}: tags and mask for frame {stamp.sec}")
            return "answered", self.tags[key], self.masks[key]
        assert key not in self.tags, "a frame counted bad or dropped was answered"
        return ("bad" if after.bad > before.bad else "dropped"), None, None

    def close(self) -> None:
        """The node is still running, its counters stand (no late second count of a frame),
        and it stops cleanly having logged nothing alarming."""
        assert self.alive(), self.process.log()[-3000:]
        seen = self.reports
        wait_until(lambda: self.reports >= seen + 3, 30, f"{self.namespace}: last /diagnostics")
        assert self.latest().total == self.sent, (self.latest(), self.sent)
        code = self.process.stop()
        log = self.process.log()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert "frame failed" not in log, log[-3000:]  # an exception that is not a FrameError


@pytest.fixture(scope="module")
def raw_tagger(ros, tmp_path_factory, text_cache_dir):
    tagger = FuzzedTagger(ros, tmp_path_factory, text_cache_dir, "/fuzzraw", Image)
    yield tagger
    tagger.close()


@pytest.fixture(scope="module")
def jpeg_tagger(ros, tmp_path_factory, text_cache_dir):
    tagger = FuzzedTagger(ros, tmp_path_factory, text_cache_dir, "/fuzzjpeg", CompressedImage,
                          image_transport="compressed")
    yield tagger
    tagger.close()


def in_process(msg: Image | CompressedImage) -> tuple[int, int] | None:
    """The frame's (height, width) as the conversions decode it here; None if it is bad."""
    try:
        return frame_to_rgb(msg).shape[:2]
    except FrameError:
        return None


def check_outcome(outcome: str, tags: TagArray | None, mask: Image | None,
                  msg: Image | CompressedImage) -> None:
    """The node decided like the conversions do in process; an answer has the tags of the
    vocabulary and a label mask of the decoded frame's size."""
    size = in_process(msg)
    assert outcome in ("answered", "bad") and (outcome == "answered") == (size is not None), \
        (outcome, size)
    if outcome == "answered":
        assert tags.header.frame_id == "camera_optical" and len(tags.scores) == 20 and tags.tags
        assert mask.encoding == "mono8" and mask.step == mask.width
        assert (mask.height, mask.width) == size and len(mask.data) == size[0] * size[1]


def test_raw_frames_through_the_node(raw_tagger):
    @settings(max_examples=RAW_CASES, **NODE_FUZZ)
    @given(raw_frames(valid_share=2, max_side=24))
    def fuzz(case: RawCase) -> None:
        outcome, tags, mask = raw_tagger.send(case.msg)
        CASES[raw_tagger.namespace, outcome] += 1
        if case.well_formed:
            assert outcome == "answered", f"well-formed frame {case!r} not answered"
        check_outcome(outcome, tags, mask, case.msg)
        if outcome == "answered":
            assert (mask.height, mask.width) == (case.msg.height, case.msg.width)

    fuzz()
    print(f"raw frames through the node: {raw_tagger.sent}, outcomes {dict(CASES)}")
    answered, bad = CASES["/fuzzraw", "answered"], CASES["/fuzzraw", "bad"]
    assert answered + bad + CASES["/fuzzraw", "dropped"] == raw_tagger.sent >= RAW_CASES
    assert answered >= RAW_CASES // 10 and bad >= RAW_CASES // 3, CASES  # both well exercised


def test_compressed_frames_through_the_node(jpeg_tagger):
    @settings(max_examples=COMPRESSED_CASES, **NODE_FUZZ)
    @given(compressed_frames(valid_share=2, max_side=32))
    def fuzz(case: CompressedCase) -> None:
        outcome, tags, mask = jpeg_tagger.send(case.msg)
        CASES[jpeg_tagger.namespace, outcome] += 1
        if case.shape is not None:
            assert outcome == "answered", f"intact frame {case!r} not answered"
            assert (mask.height, mask.width) == case.shape
        check_outcome(outcome, tags, mask, case.msg)

    fuzz()
    print(f"compressed frames through the node: {jpeg_tagger.sent}, outcomes {dict(CASES)}")
    answered, bad = CASES["/fuzzjpeg", "answered"], CASES["/fuzzjpeg", "bad"]
    assert answered + bad + CASES["/fuzzjpeg", "dropped"] == jpeg_tagger.sent >= COMPRESSED_CASES
    assert answered >= COMPRESSED_CASES // 10 and bad >= COMPRESSED_CASES // 3, CASES
