"""Node overhead: end-to-end latency (publish → TagArray received) minus the core's own time.

Starts the tagger as a real process (the launch file's command line), publishes 640×480 rgb8
frames one at a time, and pairs each frame's end-to-end latency with the core time the node
logs for it (debug log). The difference is what ROS costs: transport, conversion, publishing.

    .venv/bin/python bench/bench_node.py [--frames 30] [--method clipes|dmar|none]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time

import cv2
import numpy as np
import rclpy
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import read_image  # noqa: E402
from tagclip_ros.msg import TagArray  # noqa: E402
from tagclip_ros.node.conversions import rgb_to_image  # noqa: E402
from results_io import save_results  # noqa: E402
from tagclip_ros.node.harness import LATCHED, Camera, Client, TaggerProcess, wait_until  # noqa: E402

WEIGHTS = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "reference", "clip_tiny12_seed1.pt")
CORE_LINE = re.compile(r"frame (\d+)\.(\d+): core ([\d.]+) ms")
TARGET_MS = 10.0


def run(frames: int, method: str, weights: str) -> dict:
    """Median and p95 overhead (ms) over `frames` paced 640×480 frames."""
    from std_msgs.msg import Header
    from vision_msgs.msg import LabelInfo
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    rclpy.init()
    client = Client()
    log = os.path.join(tempfile.mkdtemp(), "tagger.log")
    params = {"model.weights": weights, "device": "cpu",
              "segmentation.enabled": method != "none",
              "segmentation.method": method if method != "none" else "clipes"}
    tagger = TaggerProcess("/bench", log, params, ("--log-level", "bench.tagclip_tagger:=debug"))
    try:
        info = client.collect(LabelInfo, "/bench/label_info", LATCHED)
        wait_until(lambda: info, 300, "tagger start")
        arrived: dict[int, float] = {}
        client.node.create_subscription(
            TagArray, "/bench/tags", lambda m: arrived.setdefault(m.header.stamp.sec, time.perf_counter()), 10)
        camera = Camera(client, "/bench/camera")
        rgb = cv2.resize(read_image(os.path.join(REPO, "samples", "rocket.jpg")), (640, 480))
        sent: dict[int, float] = {}
        for i in tqdm(range(frames + 2), desc="frames", unit="frame"):
            msg = rgb_to_image(rgb, Header())
            sent[i + 1] = time.perf_counter()
            camera.send(msg, i + 1)
            wait_until(lambda: i + 1 in arrived, 120, f"tags for frame {i + 1}")
        time.sleep(0.5)  # let the last debug lines reach the log
        core = {int(m.group(1)): float(m.group(3)) for m in CORE_LINE.finditer(tagger.log())}
    finally:
        tagger.stop()
        client.close()
        rclpy.shutdown()
    keys = sorted(k for k in arrived if k in core)[2:]  # the first two frames warm up
    e2e = np.array([1000 * (arrived[k] - sent[k]) for k in keys])
    overhead = e2e - np.array([core[k] for k in keys])
    return {"frames": len(keys), "method": method, "resolution": "640x480",
            "e2e_median_ms": float(np.median(e2e)),
            "core_median_ms": float(np.median([core[k] for k in keys])),
            "overhead_median_ms": float(np.median(overhead)),
            "overhead_p95_ms": float(np.percentile(overhead, 95)), "target_ms": TARGET_MS}


def markdown(result: dict) -> str:
    verdict = "PASS" if result["overhead_p95_ms"] <= TARGET_MS else "FAIL"
    return ("| resolution | segmentation | frames | end-to-end median | core median | "
            "overhead median | overhead p95 | target |\n|---|---|---|---|---|---|---|---|\n"
            f"| {result['resolution']} | {result['method']} | {result['frames']} | "
            f"{result['e2e_median_ms']:.1f} ms | {result['core_median_ms']:.1f} ms | "
            f"{result['overhead_median_ms']:.2f} ms | {result['overhead_p95_ms']:.2f} ms | "
            f"≤ {TARGET_MS:.0f} ms: {verdict} |\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--method", choices=("clipes", "dmar", "none"), default="clipes")
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "node"))
    args = parser.parse_args()
    result = run(args.frames, args.method, args.weights)
    save_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
