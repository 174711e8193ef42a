"""Node benchmark: the tagger as a real process over DDS, one frame at a time or at a camera rate.

Starts the tagger as a real process (the launch file's command line) on the chosen device and
precision, and publishes W×H rgb8 frames (default 640×480):

- one at a time (default): each frame's end-to-end latency (publish → TagArray received) is
  paired with the core time the node logs for it (debug log); the difference is what ROS
  costs: transport, conversion, publishing (goal: p95 ≤ 10 ms);
- with --rate HZ: a camera publishing at HZ for --seconds, after a warm-up of a few frames
  sent one at a time; reports the output rate (TagArray messages per second), latency
  p50/p95/max (publish → TagArray received), frames answered and dropped (the node keeps
  only the newest frame, so a camera faster than inference drops frames by design) and the
  node's median core time.

    .venv/bin/python bench/bench_node.py [--frames 30] [--method clipes|dmar|none]
        [--device cpu] [--precision fp32] [--rate HZ --seconds S] [--out bench/results/node]

`run` and `run_rate` are also called by bench/bench_gpu.py.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import rclpy
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import read_image  # noqa: E402
from tagclip_ros.msg import TagArray  # noqa: E402
from tagclip_ros.node.conversions import rgb_to_image  # noqa: E402
from fixture_paths import WEIGHTS  # noqa: E402
from results_io import save_results  # noqa: E402
from tagclip_ros.node.harness import LATCHED, Camera, Client, TaggerProcess, wait_until  # noqa: E402

CORE_LINE = re.compile(r"frame (\d+)\.(\d+): core ([\d.]+) ms")
TARGET_MS = 10.0
NAMESPACE = "/bench"
START_TIMEOUT_S = 900.0  # model load and vocabulary encoding (ViT-B/16 on a CPU: minutes)
FRAME_TIMEOUT_S = 300.0  # one frame, sent alone (ViT-B/16 with CLIP-ES on a slow CPU: a minute)
RATE_WARM_UP_FRAMES = 3


def node_params(weights: str, method: str, device: str = "cpu", precision: str = "fp32",
                text_cache_dir: str | None = None) -> dict:
    """The `-p` overrides of a benchmark node: weights, device, precision, segmentation."""
    params = {"model.weights": weights, "device": device, "precision": precision,
              "segmentation.enabled": method != "none",
              "segmentation.method": method if method != "none" else "clipes"}
    if text_cache_dir:
        params["text_cache_dir"] = text_cache_dir
    return params


@contextmanager
def started_tagger(params: dict) -> Iterator[tuple[Client, TaggerProcess]]:
    """rclpy, a client node and a tagger process (debug log, for its core times) that has
    published its label_info, i.e. is configured and active; all stopped on leaving. A node
    that exits while starting raises RuntimeError with its log's last lines."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    from vision_msgs.msg import LabelInfo
    rclpy.init()
    client = Client()
    log = os.path.join(tempfile.mkdtemp(), "tagger.log")
    tagger = TaggerProcess(NAMESPACE, log, params,
                           ("--log-level", f"{NAMESPACE.strip('/')}.tagclip_tagger:=debug"))
    try:
        info = client.collect(LabelInfo, f"{NAMESPACE}/label_info", LATCHED)
        wait_until(lambda: info or tagger.process.poll() is not None, START_TIMEOUT_S, "tagger start")
        if not info:
            raise RuntimeError("the tagger did not start: " + " | ".join(tagger.log().splitlines()[-5:]))
        yield client, tagger
    finally:
        tagger.stop()
        client.close()
        rclpy.shutdown()


def sample_frame(size: tuple[int, int]) -> np.ndarray:
    """The sample photograph resized to `size` (width, height), RGB."""
    return cv2.resize(read_image(os.path.join(REPO, "samples", "rocket.jpg")), size)


def core_times(tagger: TaggerProcess) -> dict[int, float]:
    """Core milliseconds per frame stamp (seconds field) from the node's debug log."""
    time.sleep(0.5)  # let the last debug lines reach the log
    return {int(m.group(1)): float(m.group(3)) for m in CORE_LINE.finditer(tagger.log())}


def run(frames: int, method: str, weights: str, device: str = "cpu", precision: str = "fp32",
        size: tuple[int, int] = (640, 480)) -> dict:
    """Median and p95 overhead (ms) over `frames` frames sent one at a time."""
    from std_msgs.msg import Header
    with started_tagger(node_params(weights, method, device, precision)) as (client, tagger):
        arrived: dict[int, float] = {}
        client.node.create_subscription(
            TagArray, f"{NAMESPACE}/tags",
            lambda m: arrived.setdefault(m.header.stamp.sec, time.perf_counter()), 10)
        camera = Camera(client, f"{NAMESPACE}/camera")
        msg = rgb_to_image(sample_frame(size), Header())
        sent: dict[int, float] = {}
        for i in tqdm(range(frames + 2), desc="frames", unit="frame"):
            sent[i + 1] = time.perf_counter()
            camera.send(msg, i + 1)
            wait_until(lambda: i + 1 in arrived, FRAME_TIMEOUT_S, f"tags for frame {i + 1}")
        core = core_times(tagger)
    keys = sorted(k for k in arrived if k in core)[2:]  # the first two frames warm up
    e2e = np.array([1000 * (arrived[k] - sent[k]) for k in keys])
    overhead = e2e - np.array([core[k] for k in keys])
    return {"frames": len(keys), "method": method, "resolution": f"{size[0]}x{size[1]}",
            "device": device, "precision": precision,
            "e2e_median_ms": float(np.median(e2e)),
            "core_median_ms": float(np.median([core[k] for k in keys])),
            "overhead_median_ms": float(np.median(overhead)),
            "overhead_p95_ms": float(np.percentile(overhead, 95)), "target_ms": TARGET_MS}


class RateCamera:
    """Publishes one frame at a fixed rate and records send and arrival times by stamp."""

    def __init__(self, client: Client, msg) -> None:
        self.camera = Camera(client, f"{NAMESPACE}/camera")
        self.msg = msg
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        client.node.create_subscription(TagArray, f"{NAMESPACE}/tags", self._on_tags, 100)

    def _on_tags(self, msg: TagArray) -> None:
        self.arrived.setdefault(msg.header.stamp.sec, time.perf_counter())

    def send(self, stamp: int) -> None:
        self.sent[stamp] = time.perf_counter()
        self.camera.send(self.msg, stamp)

    def warm_up(self, frames: int) -> None:
        """Frames sent one at a time, each answered before the next (first-call costs)."""
        for stamp in range(1, frames + 1):
            self.send(stamp)
            wait_until(lambda: stamp in self.arrived, FRAME_TIMEOUT_S, f"tags for warm-up frame {stamp}")

    def stream(self, first: int, seconds: float, rate: float) -> list[int]:
        """Publish at `rate` Hz for `seconds` from stamp `first`; wait for the last frame's
        answer (the newest frame is always processed); return the stamps sent."""
        stamps, start = [], time.perf_counter()
        for i in tqdm(range(int(round(seconds * rate))), desc=f"{rate:.0f} Hz camera", unit="frame",
                      mininterval=2):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            self.send(first + i)
            stamps.append(first + i)
        # The node may be busy with an earlier frame before it takes the last one: allow a few
        # of the slowest frames seen so far (warm-up frames included: at a slow device's pace
        # none of the streamed ones may be back yet).
        slowest = max((self.arrived[s] - self.sent[s] for s in self.arrived), default=FRAME_TIMEOUT_S)
        wait_until(lambda: stamps[-1] in self.arrived, min(FRAME_TIMEOUT_S, 10 + 3 * slowest),
                   "tags for the last frame")
        return stamps


def rate_summary(camera: RateCamera, stamps: list[int], core: dict[int, float]) -> dict:
    """Output rate, latency percentiles, answered and dropped frames of a camera run."""
    answered = [s for s in stamps if s in camera.arrived]
    latency = np.array([1000 * (camera.arrived[s] - camera.sent[s]) for s in answered])
    arrivals = sorted(camera.arrived[s] for s in answered)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    cores = [core[s] for s in answered if s in core]
    return {"sent": len(stamps), "answered": len(answered), "dropped": len(stamps) - len(answered),
            "output_hz": (len(arrivals) - 1) / span if span > 0 else 0.0,
            "latency_ms": {"p50": float(np.percentile(latency, 50)),
                           "p95": float(np.percentile(latency, 95)), "max": float(latency.max())},
            "core_median_ms": float(np.median(cores)) if cores else None}


def run_rate(seconds: float, rate: float, method: str, weights: str, device: str = "cpu",
             precision: str = "fp32", text_cache_dir: str | None = None,
             size: tuple[int, int] = (640, 480), warm_up: int = RATE_WARM_UP_FRAMES) -> dict:
    """The node under a `rate` Hz camera for `seconds`, after `warm_up` frames sent one at a
    time (see the module doc)."""
    from std_msgs.msg import Header
    params = node_params(weights, method, device, precision, text_cache_dir)
    with started_tagger(params) as (client, tagger):
        camera = RateCamera(client, rgb_to_image(sample_frame(size), Header()))
        camera.warm_up(warm_up)
        stamps = camera.stream(warm_up + 1, seconds, rate)
        core = core_times(tagger)
    return {"mode": "rate", "rate_hz": rate, "seconds": seconds, "warm_up_frames": warm_up, "method": method,
            "device": device, "precision": precision, "resolution": f"{size[0]}x{size[1]}",
            **rate_summary(camera, stamps, core)}


def markdown(result: dict) -> str:
    """The one-at-a-time overhead table."""
    verdict = "PASS" if result["overhead_p95_ms"] <= TARGET_MS else "FAIL"
    return ("| resolution | segmentation | frames | end-to-end median | core median | "
            "overhead median | overhead p95 | target |\n|---|---|---|---|---|---|---|---|\n"
            f"| {result['resolution']} | {result['method']} | {result['frames']} | "
            f"{result['e2e_median_ms']:.1f} ms | {result['core_median_ms']:.1f} ms | "
            f"{result['overhead_median_ms']:.2f} ms | {result['overhead_p95_ms']:.2f} ms | "
            f"≤ {TARGET_MS:.0f} ms: {verdict} |\n")


def rate_markdown(result: dict) -> str:
    """The camera-rate table."""
    lat, core = result["latency_ms"], result["core_median_ms"]
    return ("| device | precision | resolution | segmentation | camera | sent | answered | dropped | "
            "output rate | latency p50 | p95 | max | core median |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            f"| {result['device']} | {result['precision']} | {result['resolution']} | "
            f"{result['method']} | {result['rate_hz']:.0f} Hz × {result['seconds']:.0f} s | "
            f"{result['sent']} | {result['answered']} | {result['dropped']} | "
            f"{result['output_hz']:.1f} Hz | {lat['p50']:.1f} ms | {lat['p95']:.1f} ms | "
            f"{lat['max']:.1f} ms | " + (f"{core:.1f} ms |" if core is not None else "– |") + "\n")


def frame_size(text: str) -> tuple[int, int]:
    """'640x480' as (width, height)."""
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="frames sent one at a time")
    parser.add_argument("--method", choices=("clipes", "dmar", "none"), default="clipes")
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--device", default="cpu", help="the node's device parameter")
    parser.add_argument("--precision", default="fp32", help="the node's precision parameter")
    parser.add_argument("--size", type=frame_size, default=(640, 480), help="frame WxH")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="camera rate in Hz (0: one frame at a time, the overhead table)")
    parser.add_argument("--seconds", type=float, default=20.0, help="camera time with --rate")
    parser.add_argument("--warm-up", type=int, default=RATE_WARM_UP_FRAMES,
                        help="with --rate: frames sent one at a time first (default %(default)s)")
    parser.add_argument("--text-cache-dir", help="the node's text_cache_dir (default its own)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "node"),
                        help="results OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.rate > 0:
        result = run_rate(args.seconds, args.rate, args.method, args.weights, args.device,
                          args.precision, args.text_cache_dir, args.size, args.warm_up)
        save_results(args.out, result, rate_markdown(result))
    else:
        result = run(args.frames, args.method, args.weights, args.device, args.precision, args.size)
        save_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
