"""Multi-camera benchmark: one tagger node serving 1, 2, 3, 4 cameras (`cameras`), and its memory
beside one-camera nodes.

For each camera count N, starts one tagger as a real process with `cameras: [cam0 .. camN-1]`
and feeds every camera W×H rgb8 frames (default 640×480; JPEG with --transport compressed) at
--rate Hz for --seconds, after a warm-up frame per camera sent one at a time. Reports the frames
answered per second summed over the cameras, each camera's share (the scheduler serves them in
turn, so the shares are equal within a frame or two), the node's peak RSS (VmHWM, read from
/proc while it runs) and the CPU the node and this process (the feeder) used while streaming.
Then, as the memory baseline, N separate one-camera nodes at once (--separate N, default 3):
their peak RSS summed.

Criterion checked (PASS/FAIL): the peak RSS of the three-camera node is within 15 % of the
one-camera node's (one model and one text cache for all cameras).

Default weights: a random ViT-B/16 in OpenAI's format (bench/bench_gpu.py's, the node's own
loading path), so memory and speed are those of the real geometry; --weights takes another.

    .venv/bin/python bench/bench_cameras.py [--cameras 1,2,3,4] [--separate 3] [--seconds 30]
        [--rate 30] [--size 640x480] [--method clipes|dmar|none] [--batching auto|on|off]
        [--transport raw|compressed]
        [--device cpu] [--weights FILE] [--quick] [--out bench/results/cameras]

--quick: cameras 1 and 3, 10 s each, separate nodes 3 with 10 s (a few minutes on a CPU).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psutil
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.msg import TagArray  # noqa: E402
from tagclip_ros.node.conversions import rgb_to_compressed, rgb_to_image  # noqa: E402
from tagclip_ros.node.harness import LATCHED, Client, TaggerProcess, wait_until  # noqa: E402
from bench_node import frame_size, node_params, sample_frame  # noqa: E402
from results_io import save_results  # noqa: E402

NAMESPACE = "/cams"
START_TIMEOUT_S = 900.0  # model load and vocabulary encoding (ViT-B/16 on a CPU: minutes)
FRAME_TIMEOUT_S = 300.0
MEMORY_LIMIT = 1.15  # three cameras' node peak RSS over one camera's, at most
VMHWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.M)


def peak_rss_mb(pid: int) -> float:
    """A running process's peak resident memory (VmHWM), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return int(VMHWM.search(f.read()).group(1)) / 1024


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user + system, in seconds."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def camera_names(count: int) -> list[str]:
    return [f"cam{i}" for i in range(count)]


class Feed:
    """Publishes one frame into each camera at a rate (sensor-data QoS, as camera drivers do)
    and counts the answers per camera by stamp."""

    def __init__(self, client: Client, namespace: str, cameras: list[str], msg) -> None:
        self.msg = msg
        topic = "image/compressed" if isinstance(msg, CompressedImage) else "image"
        self.publishers = {c: client.node.create_publisher(type(msg), f"{namespace}/{c}/{topic}",
                                                           qos_profile_sensor_data) for c in cameras}
        self.answers: dict[str, dict[tuple[int, int], float]] = {c: {} for c in cameras}
        for camera in cameras:
            client.node.create_subscription(
                TagArray, f"{namespace}/{camera}/tags",
                lambda m, c=camera: self.answers[c].setdefault((m.header.stamp.sec, m.header.stamp.nanosec),
                                                               time.perf_counter()), 100)
        for camera, publisher in self.publishers.items():
            wait_until(lambda p=publisher: p.get_subscription_count() > 0, 60,
                       f"the tagger on {camera}/image")

    def send(self, camera: str, sec: int, nanosec: int) -> None:
        from builtin_interfaces.msg import Time
        self.msg.header.stamp = Time(sec=sec, nanosec=nanosec)
        self.msg.header.frame_id = camera
        self.publishers[camera].publish(self.msg)

    def warm_up(self) -> None:
        """A frame per camera, each answered before the next (first-call costs); resent while
        unanswered (a best-effort subscription may miss a frame while matching)."""
        for camera in self.publishers:
            def answered(c=camera):
                if (1, 0) not in self.answers[c]:
                    self.send(c, 1, 0)
                    time.sleep(0.5)
                return (1, 0) in self.answers[c]
            wait_until(answered, FRAME_TIMEOUT_S, f"{camera}'s warm-up frame")

    def stream(self, seconds: float, rate: float) -> dict[str, int]:
        """Every camera at `rate` Hz for `seconds` (stamps sec=2, nanosec=i); returns how many
        frames each camera had answered in that time."""
        start, count = time.perf_counter(), int(round(seconds * rate))
        for i in tqdm(range(count), desc=f"{len(self.publishers)} camera(s) at {rate:.0f} Hz",
                      unit="tick", mininterval=2):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            for camera in self.publishers:
                self.send(camera, 2, i)
        end = time.perf_counter()
        return {c: sum(1 for (sec, _), t in got.items() if sec == 2 and t <= end)
                for c, got in self.answers.items()}


@contextmanager
def started(client: Client, params: dict, count: int, namespace: str) -> Iterator[TaggerProcess]:
    """A tagger process with `count` cameras, active (every camera's label_info arrived)."""
    from vision_msgs.msg import LabelInfo
    log = os.path.join(tempfile.mkdtemp(), "tagger.log")
    tagger = TaggerProcess(namespace, log, {**params, "cameras": f"[{', '.join(camera_names(count))}]"})
    try:
        infos = [client.collect(LabelInfo, f"{namespace}/{c}/label_info", LATCHED)
                 for c in camera_names(count)]
        wait_until(lambda: all(infos) or tagger.process.poll() is not None, START_TIMEOUT_S, "tagger start")
        if tagger.process.poll() is not None:
            raise RuntimeError("the tagger did not start: " + " | ".join(tagger.log().splitlines()[-5:]))
        yield tagger
    finally:
        tagger.stop()


@contextmanager
def client_session() -> Iterator[Client]:
    """rclpy and a client node, fresh for one measurement (a DDS participant that streamed
    camera frames to a node that then exited can stop delivering messages: each measurement
    gets its own)."""
    rclpy.init()
    client = Client()
    try:
        yield client
    finally:
        client.close()
        rclpy.shutdown()


def one_node(params: dict, count: int, msg, seconds: float, rate: float) -> dict:
    """One node with `count` cameras under the feed: frames/s summed, per camera, peak RSS."""
    namespace = f"{NAMESPACE}{count}"
    with client_session() as client, started(client, params, count, namespace) as tagger:
        feed = Feed(client, namespace, camera_names(count), msg)
        feed.warm_up()
        pids = (tagger.process.pid, os.getpid())  # the node, and this process feeding it
        before, start = [cpu_seconds(pid) for pid in pids], time.perf_counter()
        answered = feed.stream(seconds, rate)
        wall = time.perf_counter() - start
        node_cpu, feeder_cpu = (cpu_seconds(pid) - used for pid, used in zip(pids, before))
        rss = peak_rss_mb(tagger.process.pid)
    return {"cameras": count, "seconds": seconds, "rate_hz": rate,
            "fps_total": sum(answered.values()) / seconds,
            "fps_per_camera": {c: n / seconds for c, n in answered.items()}, "peak_rss_mb": rss,
            "node_cpu_cores": node_cpu / wall, "feeder_cpu_cores": feeder_cpu / wall}


def separate_nodes(params: dict, count: int, msg, seconds: float, rate: float) -> dict:
    """`count` one-camera nodes at once under the feed: their peak RSS summed, frames/s."""
    with client_session() as client, started_many(client, params, count) as taggers:
        feeds = [Feed(client, f"{NAMESPACE}_sep{i}", camera_names(1), msg) for i in range(count)]
        for feed in feeds:
            feed.warm_up()
        answered: list[dict[str, int]] = []
        threads = [threading.Thread(target=lambda f=feed: answered.append(f.stream(seconds, rate)))
                   for feed in feeds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rss = [peak_rss_mb(t.process.pid) for t in taggers]
    return {"nodes": count, "seconds": seconds, "rate_hz": rate,
            "fps_total": sum(sum(a.values()) for a in answered) / seconds,
            "peak_rss_mb_each": rss, "peak_rss_mb": sum(rss)}


@contextmanager
def started_many(client: Client, params: dict, count: int) -> Iterator[list[TaggerProcess]]:
    """`count` one-camera taggers at once, all active; all stopped on leaving."""
    with ExitStack() as stack:
        yield [stack.enter_context(started(client, params, 1, f"{NAMESPACE}_sep{i}")) for i in range(count)]


def criterion(rows: list[dict]) -> dict | None:
    """Three cameras' node peak RSS ≤ MEMORY_LIMIT × one camera's (None without both)."""
    by_count = {r["cameras"]: r for r in rows}
    if 1 not in by_count or 3 not in by_count:
        return None
    ratio = by_count[3]["peak_rss_mb"] / by_count[1]["peak_rss_mb"]
    return {"ratio": ratio, "limit": MEMORY_LIMIT, "passed": ratio <= MEMORY_LIMIT}


def markdown(results: dict) -> str:
    encoding = "JPEG" if results.get("transport") == "compressed" else "rgb8"
    lines = [f"Device {results['device']}, {results['size']} {encoding} at {results['rate_hz']:.0f} Hz "
             "per camera, "
             f"segmentation {results['method']}, batching {results['batching']}, "
             f"weights {results['weights']}.",
             "", "| node | cameras | frames/s summed | per camera | peak RSS | node CPU | feeder CPU |",
             "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        shares = ", ".join(f"{v:.2f}" for v in row["fps_per_camera"].values())
        lines.append(f"| one | {row['cameras']} | {row['fps_total']:.2f} | {shares} | "
                     f"{row['peak_rss_mb']:.0f} MB | {row['node_cpu_cores']:.2f} | "
                     f"{row['feeder_cpu_cores']:.2f} |")
    separate = results.get("separate")
    if separate:
        each = " + ".join(f"{v:.0f}" for v in separate["peak_rss_mb_each"])
        lines.append(f"| {separate['nodes']} separate | 1 each | {separate['fps_total']:.2f} | – | "
                     f"{separate['peak_rss_mb']:.0f} MB ({each}) | – | – |")
    lines += ["", "CPU: cores busy while streaming (CPU seconds / wall seconds) for the node and for "
              "the benchmark's own process, which publishes the frames and takes the answers."]
    check = results.get("criterion")
    if check:
        lines += ["", f"Peak RSS of the three-camera node / the one-camera node's: {check['ratio']:.3f} "
                      f"(≤ {check['limit']:.2f}: {'PASS' if check['passed'] else 'FAIL'})."]
    return "\n".join(lines) + "\n"


def default_weights(folder: str) -> str:
    """A random ViT-B/16 in OpenAI's format, written once into `folder`."""
    from bench_gpu import write_openai_weights
    path = os.path.join(folder, "vit_b16_random_seed0.pt")
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(path):
        path, _ = write_openai_weights(0, folder)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="1,2,3,4", help="camera counts, comma-separated")
    parser.add_argument("--separate", type=int, default=3, help="one-camera nodes at once (0: none)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=30.0, help="each camera's rate, Hz")
    parser.add_argument("--size", type=frame_size, default=(640, 480), help="frame WxH")
    parser.add_argument("--method", choices=("clipes", "dmar", "none"), default="clipes")
    parser.add_argument("--batching", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw",
                        help="rgb8 frames on image, or JPEG on image/compressed (image_transport)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", help="checkpoint (default: a random ViT-B/16, OpenAI format)")
    parser.add_argument("--quick", action="store_true", help="cameras 1 and 3, 10 s each")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "cameras"))
    args = parser.parse_args(argv)
    counts = [1, 3] if args.quick else [int(c) for c in args.cameras.split(",")]
    seconds = 10.0 if args.quick else args.seconds
    weights = args.weights or default_weights(os.path.join(tempfile.gettempdir(), "tagclip_bench_weights"))
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    from std_msgs.msg import Header
    convert = rgb_to_compressed if args.transport == "compressed" else rgb_to_image
    msg = convert(sample_frame(args.size), Header())
    with tempfile.TemporaryDirectory(prefix="bench_cameras_") as cache:  # text features, shared by the runs
        params = {**node_params(weights, args.method, args.device, text_cache_dir=cache),
                  "batching": args.batching, "image_transport": args.transport}
        rows = [one_node(params, n, msg, seconds, args.rate) for n in counts]
        separate = separate_nodes(params, args.separate, msg, seconds, args.rate) if args.separate else None
    results = {"device": args.device, "size": f"{args.size[0]}x{args.size[1]}", "rate_hz": args.rate,
               "method": args.method, "batching": args.batching, "transport": args.transport,
               "weights": "random ViT-B/16" if not args.weights else os.path.basename(args.weights),
               "rows": rows, "separate": separate, "criterion": criterion(rows)}
    save_results(args.out + ("_quick" if args.quick else ""), results, markdown(results))
    check = results["criterion"]
    return 0 if check is None or check["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
