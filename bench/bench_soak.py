"""Soak: the tagger node under a 30 Hz camera for ≥ 10,000 frames — memory, latency, losses.

Starts the tagger as a real process (the launch file's command line), publishes 640×480 rgb8
frames at a steady rate with unique stamps, and records for each TagArray that comes back its
latency (publish → received). Every second it samples the node's resident memory. It reports
RSS after the warm-up minute and at the end, latency p50/p99 per minute, answered and dropped
frames (the node keeps only the newest frame, so a camera faster than inference drops frames by
design: latency, not a queue, is what must stay flat) and whether the node crashed.

    .venv/bin/python bench/bench_soak.py [--frames 10000] [--rate 30] [--method clipes|dmar|none]

Goals: RSS growth < 5% from the end of the first minute to the end, p99 flat, zero crashes.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time

import cv2
import numpy as np
import psutil
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

MB = 1 << 20
WARM_UP_S = 60.0
RSS_GROWTH_GOAL = 0.05


class Soak:
    """Publishes frames at a fixed rate and records what comes back and the node's memory."""

    def __init__(self, client: Client, tagger: TaggerProcess, rate: float) -> None:
        self.client, self.tagger, self.period = client, tagger, 1.0 / rate
        self.sent: dict[int, float] = {}
        self.latency: list[tuple[float, float]] = []  # (seconds since start, latency s)
        self.rss: list[tuple[float, float]] = []      # (seconds since start, MB)
        self.start = 0.0
        self.done = threading.Event()
        client.node.create_subscription(TagArray, f"{tagger.namespace}/tags", self._on_tags, 100)

    def _on_tags(self, msg: TagArray) -> None:
        now = time.perf_counter()
        sent = self.sent.get(msg.header.stamp.sec)
        if sent is not None:
            self.latency.append((sent - self.start, now - sent))

    def _sample_memory(self) -> None:
        process = psutil.Process(self.tagger.process.pid)
        while not self.done.wait(1.0):
            try:
                self.rss.append((time.perf_counter() - self.start, process.memory_info().rss / MB))
            except psutil.Error:
                return  # the node is gone: reported as a crash

    def run(self, frames: int, rgb: np.ndarray) -> None:
        from std_msgs.msg import Header
        camera = Camera(self.client, f"{self.tagger.namespace}/camera")
        msg = rgb_to_image(rgb, Header())
        self.start = time.perf_counter()
        sampler = threading.Thread(target=self._sample_memory, daemon=True)
        sampler.start()
        for i in tqdm(range(frames), desc="soak", unit="frame", mininterval=5):
            target = self.start + i * self.period
            pause = target - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            self.sent[i + 1] = time.perf_counter()
            camera.send(msg, i + 1)
            if self.tagger.process.poll() is not None:
                break
        # the last answers: a few of the slowest recent latencies, at most 30 s
        time.sleep(min(30.0, 5 + 3 * max((lat for _, lat in self.latency[-50:]), default=1.0)))
        self.done.set()
        sampler.join()


def per_minute(latency: list[tuple[float, float]]) -> list[dict]:
    """p50/p99 latency (ms) and answers for each minute of the run."""
    rows = []
    minutes = int(max((t for t, _ in latency), default=0) // 60) + 1
    for minute in range(minutes):
        values = [1000 * l for t, l in latency if minute * 60 <= t < (minute + 1) * 60]
        if values:
            rows.append({"minute": minute + 1, "answered": len(values),
                         "p50_ms": float(np.percentile(values, 50)),
                         "p99_ms": float(np.percentile(values, 99))})
    return rows


def summarise(soak: Soak, frames_sent: int, crashed: bool, args: argparse.Namespace) -> dict:
    warm = [mb for t, mb in soak.rss if t >= WARM_UP_S] or [mb for _, mb in soak.rss]
    rss_warm, rss_end = (warm[0], soak.rss[-1][1]) if warm else (float("nan"), float("nan"))
    minutes = per_minute(soak.latency)
    return {"frames_sent": frames_sent, "rate_hz": args.rate, "method": args.method,
            "resolution": "640x480", "duration_s": round(soak.rss[-1][0], 1) if soak.rss else 0,
            "answered": len(soak.latency), "dropped": frames_sent - len(soak.latency),
            "rss_after_warm_up_mb": rss_warm, "rss_end_mb": rss_end,
            "rss_growth": (rss_end - rss_warm) / rss_warm if warm else float("nan"),
            "crashed": crashed, "per_minute": minutes}


def markdown(result: dict) -> str:
    growth = result["rss_growth"]
    p99 = [m["p99_ms"] for m in result["per_minute"]]
    lines = [
        f"{result['frames_sent']} frames at {result['rate_hz']:.0f} Hz ({result['resolution']} rgb8, "
        f"segmentation {result['method']}) over {result['duration_s']:.0f} s: "
        f"{result['answered']} answered, {result['dropped']} dropped (newest-frame policy), "
        f"crashes: {1 if result['crashed'] else 0}.", "",
        "| RSS after warm-up | RSS at end | growth | goal |", "|---|---|---|---|",
        f"| {result['rss_after_warm_up_mb']:.0f} MB | {result['rss_end_mb']:.0f} MB | "
        f"{100 * growth:+.2f}% | < {100 * RSS_GROWTH_GOAL:.0f}%: "
        f"{'PASS' if growth < RSS_GROWTH_GOAL else 'FAIL'} |", "",
        "| minute | answered | latency p50 | latency p99 |", "|---|---|---|---|"]
    lines += [f"| {m['minute']} | {m['answered']} | {m['p50_ms']:.0f} ms | {m['p99_ms']:.0f} ms |"
              for m in result["per_minute"]]
    if len(p99) > 2:
        lines += ["", f"p99 spread over full minutes: {min(p99[:-1]):.0f}–{max(p99[:-1]):.0f} ms"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--method", choices=("clipes", "dmar", "none"), default="clipes")
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "soak"))
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    rclpy.init()
    client = Client()
    params = {"model.weights": args.weights, "device": "cpu",
              "segmentation.enabled": args.method != "none",
              "segmentation.method": args.method if args.method != "none" else "clipes"}
    tagger = TaggerProcess("/soak", os.path.join(tempfile.mkdtemp(), "tagger.log"), params)
    try:
        from vision_msgs.msg import LabelInfo
        info = client.collect(LabelInfo, "/soak/label_info", LATCHED)
        wait_until(lambda: info or tagger.process.poll() is not None, 300, "tagger start")
        rgb = cv2.resize(read_image(os.path.join(REPO, "samples", "rocket.jpg")), (640, 480))
        soak = Soak(client, tagger, args.rate)
        soak.run(args.frames, rgb)
        died = tagger.process.poll() is not None  # it ended before being asked to
    finally:
        stopped = tagger.stop()
        client.close()
        rclpy.shutdown()
    result = summarise(soak, len(soak.sent), died or stopped != 0, args)
    save_results(args.out, result, markdown(result))
    return 1 if result["crashed"] else 0


if __name__ == "__main__":
    sys.exit(main())
