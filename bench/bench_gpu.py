"""GPU benchmark in one command: per-stage time, frames/s and the node's output rate, by precision.

    .venv/bin/python bench/bench_gpu.py [--device cuda] [--quick] [--out bench/results/gpu.json]

For 640×480 and 1280×720 frames, for fp32, fp16 and bf16 (those the device cannot run are listed
with the core's reason: fp16 needs CUDA; bf16 on a CPU needs native bfloat16), and for tags only,
tags + CLIP-ES masks and tags + DMAR masks: milliseconds per stage (the core's `StageTimer`:
preprocess, coarse, dmar, cwr, clipes / dmar_masks, and the overlay the node draws when
`/overlay` is watched), the total (`Perception.run`, overlay excluded) and frames/s, medians
over the repeats after warm-up runs; and each precision's deviation from fp32 (scores, tags,
label masks). Then the node: the tagger as a real process (bench/bench_node.py) on the same
device and precision, fed by a 30 Hz camera of 640×480 rgb8 frames for --node-seconds, with its
output rate (TagArray messages/s), latency p50/p95/max (publish → tags received) and frames
dropped (the node keeps only the newest frame, by design).

The network is ViT-B/16 with seeded random weights rounded to float16 values (speed does not
depend on the values; no pretrained weights can be downloaded on the build machine), written as
an OpenAI-format state dict to a temporary file that both the core part (through `load_model`,
the node's own loading path) and the node load; the file is checked against the in-memory model
first. `--weights FILE` uses a checkpoint instead (the tests' tiny fixture keeps a test fast).

Several cameras, one model (the node's `cameras`): in the goal precision (fp16 on CUDA; the
first precision measured where it is not), 640×480 frames (--camera-size), tags + CLIP-ES masks
(the node's default), frames/s summed over 1, 2, 3 and 4 cameras: each round is one frame per
camera (the image mirrored and shifted per camera) through `Perception.run_batch` together
(batched) and through `run` one at a time, the two interleaved after the warm-up rounds; their
ratio, the batched rounds' peak GPU memory, and whether batching changed any frame's tags.
--no-cameras skips it.

Goals (PASS/FAIL, checked on cuda in fp16 at 640×480): tags ≤ 10 ms and tags + CLIP-ES masks
≤ 25 ms per frame; the node's output rate ≥ 29 Hz under the 30 Hz camera. On other devices and
precisions the figures are reported without a verdict.

--device cpu proves the script on the build machine: it defaults to one run per row without
warm-up runs (a ViT-B/16 frame takes seconds there) and writes bench/results/gpu_cpu.json.
--quick: fewer repeats and an 8 s camera. --sizes, --precisions, --warmup, --repeats,
--node-seconds, --node-precisions and --node-methods narrow or widen the run (--warmup and
--repeats also count the cameras part's rounds). The node part needs the ROS messages
(install/, built by scripts/bootstrap.sh); it runs under scripts/ros_env.sh by itself, so the
one command needs no sourcing. --no-node skips it.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import TextFeatureCache, load_model  # noqa: E402
from tagclip_ros.core.device import resolve_device  # noqa: E402
from tagclip_ros.core.pipeline import Perceived, Perception, batching_pays  # noqa: E402
from tagclip_ros.core.profile import STAGES  # noqa: E402
from tagclip_ros.core.dataset_profiles import PROFILES  # noqa: E402
from tagclip_ros.core.settings import PRECISION_NAMES  # noqa: E402
from results_io import save_results  # noqa: E402
from stages import (deviation, device_name, median_timing, parse_precisions, precision_refusal,  # noqa: E402
                    random_vit_b16, software, synchronize, tags_cell, timed_frame)

SIZES = "640x480,1280x720"  # frames, width × height
WORKS = {"tags": None, "clipes": "clipes", "dmar": "dmar"}  # row name → segmentation method
WORK_TITLES = {"tags": "tags", "clipes": "tags + CLIP-ES masks", "dmar": "tags + DMAR masks"}
ALL_PRECISIONS = ",".join(PRECISION_NAMES)
REFERENCE = "fp32"
GOAL_DEVICE, GOAL_PRECISION, GOAL_SIZE = "cuda", "fp16", (480, 640)
GOAL_MS = {"tags": 10.0, "clipes": 25.0}  # per 640×480 frame, cuda fp16
GOAL_NODE_HZ = 29.0                        # node output rate under a 30 Hz camera, cuda fp16
CAMERA_HZ = 30.0
CAMERAS = (1, 2, 3, 4)     # the cameras part: cameras served by one model, ...
CAMERAS_WORK = "clipes"    # ... doing the node's default work on GOAL_SIZE frames
FEATURE_ATOL = 1e-5  # the weights file's features against the in-memory model's
DEFAULTS = {  # (device type, quick) → warm-up runs, repeats, node seconds, node warm-up frames
    ("cuda", False): (3, 20, 20.0, 3), ("cuda", True): (2, 5, 8.0, 3),
    ("cpu", False): (0, 1, 20.0, 1), ("cpu", True): (0, 1, 8.0, 1),
}


@dataclass
class Plan:
    """What to measure, settled from the command line and the device's defaults."""

    device: torch.device
    sizes: list[tuple[int, int]]  # (height, width)
    precisions: list[str]
    warmup: int
    repeats: int
    node_seconds: float
    node_warm_up: int
    node_precisions: list[str]
    node_methods: list[str]
    image: str
    quick: bool
    cameras: tuple[int, ...] = CAMERAS  # () with --no-cameras
    camera_size: tuple[int, int] = GOAL_SIZE  # (height, width) of every camera's frames
    node_note: str | None = None  # why the node is not measured, when it is not
    rows: list[dict] = field(default_factory=list)


def write_openai_weights(seed: int, folder: str) -> tuple[str, dict]:
    """The random ViT-B/16 as an OpenAI-format state dict file (float16 tensors, as OpenAI's
    `ViT-B-16.pt` holds; the values are float16 already, so nothing is lost), and the check that
    `load_model` builds the same network from it: one image's features compared."""
    model = random_vit_b16(seed)
    path = os.path.join(folder, f"vit_b16_random_seed{seed}.pt")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    loaded = load_model(weights=path, device="cpu", precision="fp32")
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        diff = float((loaded.model.encode_image(pixels) - model.encode_image(pixels)).abs().max())
    if diff > FEATURE_ATOL:
        raise RuntimeError(f"the OpenAI-format file {path} loads as another network "
                           f"(image features differ by {diff:.2e})")
    return path, {"max_abs_feature_diff": diff, "network": loaded.description.split(" from ")[0]}


def resized(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The image as RGB uint8 (height, width, 3)."""
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def skipped_rows(precision: str, reason: str, plan: Plan) -> list[dict]:
    """The rows of a precision the device cannot run, each carrying the reason."""
    return [{"precision": precision, "height": h, "width": w, "work": work, "skipped": reason}
            for h, w in plan.sizes for work in WORKS]


def peak_gpu_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset, MB (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure_row(perception: Perception, rgb: np.ndarray, work: str, plan: Plan) -> tuple[dict, Perceived]:
    """Median stages, total and frames/s of one (size, work) after the warm-up runs."""
    method = WORKS[work]
    for _ in range(plan.warmup):
        timed_frame(perception, rgb, method)
    reset_peak(plan.device)
    timings = [timed_frame(perception, rgb, method) for _ in range(plan.repeats)]
    medians = median_timing(timings)
    row = {"work": work, **medians, "fps": 1e3 / medians["total_ms"],
           "peak_gpu_mb": peak_gpu_mb(plan.device)}
    return row, timings[-1].perceived


def measure_precision(precision: str, weights: str, cache_dir: str, image: Image.Image,
                      plan: Plan, progress: tqdm, cameras: bool = False
                      ) -> tuple[list[dict], dict, dict | None]:
    """Every (size, work) row of one precision, its last results for the deviation table, and
    (if `cameras`) the cameras part with the same model."""
    loaded = load_model(weights=weights, device=str(plan.device), precision=precision)
    perception = Perception.for_profile(loaded, PROFILES["voc"], TextFeatureCache(loaded, cache_dir))
    with torch.no_grad():
        for method in WORKS.values():  # first calls: kernels picked, caches filled
            timed_frame(perception, resized(image, 224, 224), method)
        rows, results = [], {}
        for height, width in plan.sizes:
            rgb = resized(image, height, width)
            for work in WORKS:
                progress.set_postfix_str(f"{precision} {width}x{height} {work}")
                row, results[height, width, work] = measure_row(perception, rgb, work, plan)
                rows.append({"precision": precision, "height": height, "width": width, **row})
                progress.update()
        several = measure_cameras(perception, image, plan, progress) if cameras else None
    if several is not None:
        several = {"precision": precision, "batching_pays": batching_pays(loaded), **several}
    del perception, loaded
    release(plan.device)
    return rows, results, several


def camera_frames(image: Image.Image, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """One frame of `size` (height, width) per camera: the image, mirrored for every second
    camera and shifted (wrapped) by a quarter of its width for the third and fourth, so that no
    two of the first four cameras see the same picture."""
    rgb = resized(image, *size)
    frames = []
    for k in range(count):
        frame = rgb[:, ::-1] if k % 2 else rgb
        frame = np.roll(frame, (k // 2) * size[1] // 4, axis=1)
        frames.append(np.ascontiguousarray(frame))
    return frames


def timed_round(device: torch.device, work) -> tuple[float, list[Perceived]]:
    """`work()`'s wall seconds, device work included, and its results."""
    synchronize(device)
    start = time.perf_counter()
    results = work()
    synchronize(device)
    return time.perf_counter() - start, results


def camera_schedule(counts: tuple[int, ...], repeat: int) -> list[tuple[int, str]]:
    """One repeat's rounds: for each number of cameras, batched then one at a time; reversed on
    odd repeats, so that a drift in the machine's speed hits both ways alike."""
    rounds = [(n, way) for n in counts for way in ("batched", "one_at_a_time")]
    return rounds if repeat % 2 == 0 else rounds[::-1]


def measure_cameras(perception: Perception, image: Image.Image, plan: Plan, progress: tqdm) -> dict:
    """Per number of cameras N: a round of N frames (`camera_frames`) through `run_batch` and
    through `run` one at a time, interleaved by `camera_schedule`, `plan.warmup` rounds of each
    first; frames/s summed over the cameras = N / the median round, the batched rounds' peak GPU
    memory, and each batched frame against its own run (the last repeat's)."""
    device, method = plan.device, WORKS[CAMERAS_WORK]
    frames = camera_frames(image, max(plan.cameras), plan.camera_size)
    ways = {"batched": lambda n: perception.run_batch(frames[:n], method),
            "one_at_a_time": lambda n: [perception.run(rgb, method) for rgb in frames[:n]]}
    seconds = {(n, way): [] for n in plan.cameras for way in ways}
    peaks, last = dict.fromkeys(plan.cameras), {}
    for repeat in range(plan.warmup + plan.repeats):
        for n, way in camera_schedule(plan.cameras, repeat):
            progress.set_postfix_str(f"{n} camera(s) {way.replace('_', ' ')}"
                                     + (" (warm-up)" if repeat < plan.warmup else ""))
            reset_peak(device)
            wall, last[n, way] = timed_round(device, lambda: ways[way](n))
            if repeat >= plan.warmup:
                seconds[n, way].append(wall)
                if way == "batched" and device.type == "cuda":
                    peaks[n] = max(peaks[n] or 0.0, peak_gpu_mb(device))
        progress.update()
    rows = []
    for n in plan.cameras:
        fps = {way: n / statistics.median(seconds[n, way]) for way in ways}
        checks = [deviation(one, together) for one, together in
                  zip(last[n, "one_at_a_time"], last[n, "batched"])]
        rows.append({"cameras": n, "batched_fps": fps["batched"], "one_at_a_time_fps": fps["one_at_a_time"],
                     "ratio": fps["batched"] / fps["one_at_a_time"], "peak_gpu_mb": peaks[n],
                     "max_abs_score_diff": max(c["max_abs_score_diff"] for c in checks),
                     "same_tags": all(c["same_tags"] for c in checks), "runs": len(seconds[n, "batched"])})
    return {"height": plan.camera_size[0], "width": plan.camera_size[1], "work": CAMERAS_WORK,
            "rows": rows}


def release(device: torch.device) -> None:
    """Free what the last model held, so that the next one (or the node) finds the memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def core_part(plan: Plan, weights: str, cache_dir: str) -> tuple[list[dict], list[dict], dict | None]:
    """All rows (measured or skipped), the deviations from fp32, and the cameras part (None
    when it was not measured)."""
    image = Image.open(plan.image).convert("RGB")
    usable = {p: precision_refusal(p, plan.device) for p in plan.precisions}
    for p, reason in usable.items():
        if reason:
            print(f"skipping {p} on {plan.device}: {reason}")
    runnable = [p for p, reason in usable.items() if not reason]
    cameras = cameras_precision(runnable) if plan.cameras else None
    rows, results, several = [], {}, None
    progress = tqdm(total=len(runnable) * len(plan.sizes) * len(WORKS)
                    + (plan.warmup + plan.repeats if cameras else 0), desc="core", unit="row")
    for precision, reason in usable.items():
        if reason:
            rows += skipped_rows(precision, reason, plan)
            continue
        measured, results[precision], found = measure_precision(
            precision, weights, cache_dir, image, plan, progress, cameras=precision == cameras)
        rows += measured
        several = found or several
    progress.close()
    return rows, deviations(results), several


def cameras_precision(runnable: list[str]) -> str | None:
    """The cameras part's precision: the goal's where it runs, else the first that runs."""
    return GOAL_PRECISION if GOAL_PRECISION in runnable else runnable[0] if runnable else None


def deviations(results: dict[str, dict]) -> list[dict]:
    """Each measured precision against fp32 on the same frames."""
    if REFERENCE not in results:
        return []
    out = []
    for precision, by_row in results.items():
        if precision == REFERENCE:
            continue
        for (height, width, work), perceived in by_row.items():
            out.append({"precision": precision, "height": height, "width": width, "work": work,
                        **deviation(results[REFERENCE][height, width, work], perceived)})
    return out


def ros_command(args: list[str]) -> list[str]:
    """`args` run under scripts/ros_env.sh (rclpy and the messages importable), whether or not
    the caller sourced it (sourcing twice changes nothing)."""
    venv = os.path.join(REPO, ".venv") if os.path.isdir(os.path.join(REPO, ".venv")) else sys.prefix
    script = '. scripts/ros_env.sh "$0" install && exec "$@"'
    return ["bash", "-c", script, venv, sys.executable, *args]


def node_run(precision: str, method: str, weights: str, cache_dir: str, plan: Plan,
             folder: str) -> dict:
    """The node under the 30 Hz camera (bench/bench_node.py --rate), as a row."""
    row = {"precision": precision, "method": method, "device": str(plan.device)}
    reason = precision_refusal(precision, plan.device)
    if reason:
        return {**row, "skipped": reason}
    out = os.path.join(folder, f"node_{precision}_{method}")
    args = [os.path.join(REPO, "bench", "bench_node.py"), "--rate", str(CAMERA_HZ),
            "--seconds", str(plan.node_seconds), "--warm-up", str(plan.node_warm_up),
            "--method", method, "--device", str(plan.device), "--precision", precision,
            "--weights", weights, "--text-cache-dir", cache_dir, "--out", out]
    print(f"node: {precision}, segmentation {method}, {CAMERA_HZ:.0f} Hz camera for "
          f"{plan.node_seconds:.0f} s (after {plan.node_warm_up} warm-up frame(s))")
    done = subprocess.run(ros_command(args), cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
        print("\n".join(tail), file=sys.stderr)
        return {**row, "error": f"bench_node.py exited with {done.returncode}: " + " | ".join(tail[-3:])}
    with open(out + ".json", encoding="utf-8") as f:
        return {**row, **json.load(f)}


def node_part(plan: Plan, weights: str, cache_dir: str, folder: str) -> list[dict]:
    """The node rows, one per precision and segmentation method asked for; each run's files go
    in folder (the run's temporary folder)."""
    release(plan.device)
    return [node_run(p, m, weights, cache_dir, plan, folder)
            for p in plan.node_precisions for m in plan.node_methods]


def goals(results: dict) -> list[dict]:
    """The goals with their figures and verdicts (None where not measured or not applicable)."""
    applies = results["device"]["type"] == GOAL_DEVICE
    out = []
    for work, limit in GOAL_MS.items():
        row = next((r for r in results["rows"] if r["precision"] == GOAL_PRECISION and "skipped" not in r
                    and (r["height"], r["width"]) == GOAL_SIZE and r["work"] == work), None)
        value = row["total_ms"] if row else None
        out.append({"goal": f"{WORK_TITLES[work]} ≤ {limit:.0f} ms per 640×480 frame", "value": value,
                    "unit": "ms", "passed": (value <= limit) if applies and value is not None else None})
    node = next((r for r in results["node"] if r["precision"] == GOAL_PRECISION and "output_hz" in r
                 and r["method"] != "none"), None)
    value = node["output_hz"] if node else None
    out.append({"goal": f"node output ≥ {GOAL_NODE_HZ:.0f} Hz under a {CAMERA_HZ:.0f} Hz camera",
                "value": value, "unit": "Hz",
                "passed": (value >= GOAL_NODE_HZ) if applies and value is not None else None})
    return out


def verdict(passed: bool | None) -> str:
    return "–" if passed is None else "PASS" if passed else "FAIL"


def header(results: dict) -> str:
    """Where and how it ran, as the Markdown's first paragraph."""
    sw, dev, w = results["software"], results["device"], results["weights"]
    cuda = f", CUDA {sw['cuda']}, cuDNN {sw['cudnn']}" if dev["type"] == "cuda" else ""
    check = (f"; the file loads back as the in-memory model, features within "
             f"{w['check']['max_abs_feature_diff']:.1e}" if w.get("check") else "")
    return (f"GPU benchmark (`bench/bench_gpu.py --device {dev['type']}"
            f"{' --quick' if results['quick'] else ''}`), {results['date']}: {dev['name']} "
            f"({dev['type']}), torch {sw['torch']}{cuda}, {sw['torch_threads']} CPU threads. "
            f"{w['description']}{check}. Image `{results['image']}` resized to each frame, "
            f"vocabulary voc (20 classes + 25 background names); median of {results['repeats']} "
            f"run(s) after {results['warmup']} warm-up run(s) per row.")


def rows_markdown(results: dict) -> list[str]:
    """The per-stage table: one line per precision, frame and work; one per skipped precision."""
    lines = ["| precision | frame | work | " + " | ".join(STAGES) + " | total (ms) | frames/s |"
             + (" peak GPU MB |" if results["device"]["type"] == "cuda" else ""),
             "|---|---|---|" + "---|" * (len(STAGES) + 2)
             + ("---|" if results["device"]["type"] == "cuda" else "")]
    noted = set()
    for r in results["rows"]:
        if "skipped" in r:
            if r["precision"] not in noted:
                noted.add(r["precision"])
                lines.append(f"| {r['precision']} | all | all | skipped: {r['skipped']} |")
            continue
        cells = [fmt_ms(r["stages_ms"][s]) if s in r["stages_ms"] else "–" for s in STAGES]
        peak = f" {r['peak_gpu_mb']:.0f} |" if r.get("peak_gpu_mb") is not None else ""
        lines.append(f"| {r['precision']} | {r['width']}×{r['height']} | {WORK_TITLES[r['work']]} | "
                     + " | ".join(cells) + f" | **{fmt_ms(r['total_ms'])}** | {fmt_fps(r['fps'])} |" + peak)
    return lines


def fmt_fps(value: float) -> str:
    """Frames per second, two significant digits below 10."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2g}"


def fmt_ms(value: float) -> str:
    """Milliseconds with as many digits as they deserve."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def deviation_markdown(rows: list[dict]) -> list[str]:
    """Each precision against fp32 on the same frames."""
    if not rows:
        return ["No precision besides fp32 was measured: no deviation to report."]
    lines = ["Deviation from fp32 on the same frames:", "",
             "| precision | frame | work | max \\|Δ score\\| | same tags | label-mask agreement |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        agreement = "–" if r["mask_agreement"] is None else f"{100 * r['mask_agreement']:.2f}%"
        lines.append(f"| {r['precision']} | {r['width']}×{r['height']} | {WORK_TITLES[r['work']]} | "
                     f"{r['max_abs_score_diff']:.1e} | {tags_cell(r)} | {agreement} |")
    return lines


def node_markdown(rows: list[dict], note: str | None) -> list[str]:
    """The node under the camera, or why it was not measured."""
    if not rows:
        return [f"{note or 'node not measured'}."]
    lines = [f"The node (`tagger_node`, its own process, over DDS) under a {CAMERA_HZ:.0f} Hz camera "
             "of 640×480 rgb8 frames; latency is publish → TagArray received; the node keeps only "
             "the newest frame, so frames it cannot keep up with are dropped by design:", "",
             "| device | precision | segmentation | camera | sent | answered | dropped | output rate | "
             "latency p50 | p95 | max | core median |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "output_hz" not in r:
            lines.append(f"| {r['device']} | {r['precision']} | {r['method']} | "
                         f"{'skipped: ' + r['skipped'] if 'skipped' in r else 'failed: ' + r['error']} |")
            continue
        lat, core = r["latency_ms"], r["core_median_ms"]
        lines.append(f"| {r['device']} | {r['precision']} | {r['method']} | {r['rate_hz']:.0f} Hz × "
                     f"{r['seconds']:.0f} s | {r['sent']} | {r['answered']} | {r['dropped']} | "
                     f"**{r['output_hz']:.1f} Hz** | {lat['p50']:.0f} ms | {lat['p95']:.0f} ms | "
                     f"{lat['max']:.0f} ms | " + (f"{core:.0f} ms |" if core is not None else "– |"))
    return lines


def cameras_markdown(results: dict) -> list[str]:
    """Frames/s summed over 1–4 cameras, batched and one at a time, or why not measured."""
    c = results.get("cameras")
    if not c:
        return [f"{results.get('cameras_note') or 'cameras not measured'}."]
    cuda = results["device"]["type"] == "cuda"
    runs = c["rows"][0]["runs"]
    lines = [f"Several cameras, one model ({c['precision']}, {c['width']}×{c['height']} frames, "
             f"{WORK_TITLES[c['work']]}): each round is one frame per camera (the image mirrored and "
             "shifted per camera), through `Perception.run_batch` together (batched) and through "
             "`run` one at a time, the two interleaved; frames/s summed over the cameras = cameras "
             f"/ the median of {runs} round(s) after {results['warmup']} warm-up round(s); "
             f"`batching_pays` (the node's batching:=auto) says {c['batching_pays']} here:", "",
             "| cameras | batched frames/s | one at a time frames/s | batched / one at a time (frames/s) | "
             "max \\|Δ score\\| | same tags |" + (" peak GPU MB (batched) |" if cuda else ""),
             "|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    for r in c["rows"]:
        peak = f" {r['peak_gpu_mb']:.0f} |" if r.get("peak_gpu_mb") is not None else ""
        lines.append(f"| {r['cameras']} | **{fmt_fps(r['batched_fps'])}** | "
                     f"{fmt_fps(r['one_at_a_time_fps'])} | {r['ratio']:.2f} | "
                     f"{r['max_abs_score_diff']:.1e} | {'yes' if r['same_tags'] else 'no'} |" + peak)
    return lines


def goals_markdown(results: dict) -> list[str]:
    """The goals, with verdicts on cuda; elsewhere they say they were not checked."""
    device = results["device"]["type"]
    if device != GOAL_DEVICE:
        return [f"Goals (checked on {GOAL_DEVICE} in {GOAL_PRECISION} only, so not here on {device}): "
                + "; ".join(g["goal"] for g in results["goals"]) + "."]
    lines = [f"Goals ({GOAL_DEVICE}, {GOAL_PRECISION}):", ""]
    for g in results["goals"]:
        value = "not measured" if g["value"] is None else f"{g['value']:.1f} {g['unit']}"
        lines.append(f"- {g['goal']}: {value}: **{verdict(g['passed'])}**")
    return lines


def markdown(results: dict) -> str:
    """README-ready Markdown of the results."""
    lines = [header(results), "", "Milliseconds per stage (`StageTimer`, which waits for the GPU at "
             "each stage boundary), total = `Perception.run` (overlay excluded: the node draws it "
             "only when `/overlay` is watched), frames/s = 1000 / total:", ""]
    lines += rows_markdown(results) + [""] + deviation_markdown(results["deviation"])
    lines += [""] + cameras_markdown(results)
    lines += [""] + node_markdown(results["node"], results.get("node_note")) + [""] + goals_markdown(results)
    return "\n".join(lines) + "\n"


def build_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    """The command line with the device's defaults filled in."""
    warmup, repeats, seconds, node_warm_up = DEFAULTS[device.type, args.quick]
    node_precisions = args.node_precisions or ("fp16" if device.type == "cuda" else "fp32")
    node_note = ("node not measured: --no-node" if args.no_node else None if
                 importlib.util.find_spec("rclpy") else "node not measured: no ROS 2 here")
    return Plan(device, parse_sizes(args.sizes), parse_precisions(args.precisions),
                warmup if args.warmup is None else args.warmup,
                repeats if args.repeats is None else args.repeats,
                seconds if args.node_seconds is None else args.node_seconds, node_warm_up,
                [] if node_note else parse_precisions(node_precisions),
                [m.strip() for m in args.node_methods.split(",") if m.strip()],
                os.path.abspath(args.image), args.quick, () if args.no_cameras else CAMERAS,
                parse_sizes(args.camera_size)[0], node_note)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'640x480,1280x720' as [(480, 640), (720, 1280)] (height, width)."""
    sizes = []
    for item in (t.strip().lower() for t in text.split(",") if t.strip()):
        width, _, height = item.partition("x")
        if not (width.isdigit() and height.isdigit() and int(width) >= 16 and int(height) >= 16):
            raise ValueError(f"frame size {item!r} is not WIDTHxHEIGHT (at least 16x16)")
        sizes.append((int(height), int(width)))
    if not sizes:
        raise ValueError("no frame size given")
    return sizes


def weights_for(args: argparse.Namespace, folder: str) -> tuple[str, dict]:
    """The weights file both parts load, and what it is."""
    if args.weights:
        return os.path.abspath(args.weights), {"file": os.path.abspath(args.weights),
                                               "description": f"Weights `{args.weights}`"}
    path, check = write_openai_weights(args.seed, folder)
    return path, {"file": None, "seed": args.seed, "check": check,
                  "description": f"{check['network']} with random weights (seed {args.seed}, float16 "
                                 "values), written as an OpenAI-format state dict and loaded by "
                                 "`load_model`, the node's path"}


def run(args: argparse.Namespace, plan: Plan) -> dict:
    """Both parts, as the JSON results."""
    device = plan.device
    print(f"bench_gpu: torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, device {device}: "
          f"{device_name(device)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as folder:
        weights, about = weights_for(args, folder)
        cache_dir = args.cache_dir or os.path.join(folder, "text")
        rows, deviation_rows, cameras = core_part(plan, weights, cache_dir)
        node = node_part(plan, weights, cache_dir, folder)
    results = {"benchmark": "gpu", "quick": plan.quick, "date": time.strftime("%Y-%m-%d"),
               "device": {"type": device.type, "name": device_name(device), "index": device.index},
               "software": software(), "weights": about,
               "image": os.path.relpath(plan.image, REPO), "precisions": plan.precisions,
               "warmup": plan.warmup, "repeats": plan.repeats, "rows": rows,
               "deviation": deviation_rows, "cameras": cameras,
               "cameras_note": None if cameras else "cameras not measured: --no-cameras"
               if not plan.cameras else "cameras not measured: no precision runs on this device",
               "node": node, "node_note": plan.node_note}
    results["goals"] = goals(results)
    results["wall_s"] = time.perf_counter() - start
    return results


def default_out(device: str, quick: bool) -> str:
    """bench/results/gpu.json on CUDA; a CPU (proof) run writes gpu_cpu.json; --quick adds _quick."""
    name = "gpu" if device.startswith("cuda") else "gpu_cpu"
    return os.path.join(REPO, "bench", "results", f"{name}{'_quick' if quick else ''}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, an 8 s camera")
    parser.add_argument("--out", help="JSON results (Markdown next to it, .md); default "
                        "bench/results/gpu.json, or gpu_cpu.json for --device cpu (_quick added "
                        "with --quick)")
    parser.add_argument("--precisions", default=ALL_PRECISIONS, help="default %(default)s")
    parser.add_argument("--sizes", default=SIZES, help="frames, WxH comma-separated (default "
                        "%(default)s; the goals are at 640x480)")
    parser.add_argument("--warmup", type=int, help="warm-up runs per row (cuda 3, cpu 0)")
    parser.add_argument("--repeats", type=int, help="timed runs per row (cuda 20, quick 5; cpu 1)")
    parser.add_argument("--node-seconds", type=float, help="camera time (20 s, quick 8 s)")
    parser.add_argument("--node-precisions", help="the node's precisions (cuda fp16, cpu fp32)")
    parser.add_argument("--node-methods", default="clipes",
                        help="the node's segmentation: clipes, dmar, none; comma-separated "
                             "(default %(default)s, the node's default)")
    parser.add_argument("--no-node", action="store_true", help="skip the node part")
    parser.add_argument("--camera-size", default="640x480",
                        help="the cameras part's frames, WxH (default %(default)s)")
    parser.add_argument("--no-cameras", action="store_true",
                        help="skip the cameras part (1-4 cameras, batched and one at a time)")
    parser.add_argument("--weights", help="checkpoint file instead of random ViT-B/16 weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--cache-dir", help="text-feature cache folder (default: a temporary one)")
    parser.add_argument("--image", default=os.path.join(REPO, "samples", "astronaut.jpg"))
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out or default_out(args.device, args.quick))
    try:
        plan = build_plan(args, resolve_device(args.device))
    except ValueError as exc:  # a device this machine does not have, a bad precision name
        parser.exit(2, f"bench_gpu: {exc}\n")
    results = run(args, plan)
    save_results(os.path.splitext(out)[0], results, markdown(results))
    base = os.path.splitext(out)[0]
    print(f"wrote {base}.json and {base}.md in {results['wall_s']:.0f} s")
    return 1 if any(g["passed"] is False for g in results["goals"]) else 0


if __name__ == "__main__":
    sys.exit(main())
