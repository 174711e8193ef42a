"""Batching benchmark: several cameras' frames through `Perception.run_batch` at once against the
same frames through `Perception.run` one at a time.

    .venv/bin/python bench/bench_batching.py [--device cpu|cuda] [--quick] [--frames 1,2,3,4]
                                             [--segmentation clipes|dmar|none] [--repeats N]
                                             [--out bench/results/batching_cpu.json]

For batches of 1, 2, 3 and 4 frames of 480×640 (the four images of samples/, one per camera):
the wall time per frame of one `run_batch` call (equal-sized frames share the coarse pass, all
frames' CWR crops one forward) and of the same frames through `run` one at a time, and batched /
one at a time; also the process's CPU time per frame (all threads). Both ways run in the same
process, interleaved: each repeat runs camera k's frame alone, then the first k + 1 frames
batched, for k = 0..3 (one at a time, n frames cost the sum of the first n runs), the order
reversed on odd repeats so that load changes hit both ways alike; the figures are medians over
the repeats. The CPU share the process got is reported (on a shared machine other load slows
either way at random). Every batched frame is checked against its own run (largest score
difference, same tags, label-mask agreement): batching must not change results.

ViT-B/16 geometry with seeded random weights rounded to float16 values (speed does not depend on
the values; no pretrained weights can be downloaded on the build machine), float32. The
vocabulary's text features use 8 of the 85 templates (image time does not depend on them).
With random weights almost every class becomes a CWR candidate; real weights give a few.

Defaults: VOC's 20 classes (+ 25 background names), tags + CLIP-ES masks (the node's default),
3 repeats (CUDA: 10, after one warm-up of each batch size both ways). --quick (under 3 minutes on
2 CPU cores): VOC's first 5 classes (5 CWR candidates at most, nearer what real weights give),
tags + DMAR masks, one repeat (CUDA: 3). Results go to bench/results/batching_<cpu|cuda>.json
(--quick: batching_<cpu|cuda>_quick.json) and the table next to it (.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import psutil
import torch
from PIL import Image
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import TagClipSettings, TextFeatureCache, load_vocabulary  # noqa: E402
from tagclip_ros.core.device import resolve_device  # noqa: E402
from tagclip_ros.core.loading import LoadedModel, from_model  # noqa: E402
from tagclip_ros.core.pipeline import Perceived, Perception, batching_pays  # noqa: E402
from tagclip_ros.core.prompts import resolve_templates  # noqa: E402
from tagclip_ros.core.vocab import Vocabulary  # noqa: E402
from results_io import save_results  # noqa: E402
from stages import deviation, device_name, random_vit_b16, software, synchronize  # noqa: E402

SIZE = (480, 640)  # every camera's frames, height × width
IMAGES = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")  # one per camera
FRAMES = "1,2,3,4"
TEMPLATES = 8
DEFAULTS = {  # (device type, quick) → warm-up rounds, repeats, classes, segmentation
    ("cpu", False): (0, 3, 20, "clipes"), ("cpu", True): (0, 1, 5, "dmar"),
    ("cuda", False): (1, 10, 20, "clipes"), ("cuda", True): (1, 3, 5, "dmar"),
}
MIN_CPU_SHARE = 0.8  # below this, other load on the machine distorted the timings


@dataclass
class Timed:
    """One way of running n frames: wall and CPU seconds of the whole call, and the results."""

    wall_s: float
    cpu_s: float
    results: list[Perceived]


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def timed(device: torch.device, work) -> Timed:
    """`work()` timed, device work included."""
    synchronize(device)
    wall, cpu = time.perf_counter(), cpu_seconds()
    results = work()
    synchronize(device)
    return Timed(time.perf_counter() - wall, cpu_seconds() - cpu, results)


def batched(perception: Perception, frames: list[np.ndarray], segmentation: str | None) -> Timed:
    """One `run_batch` of `frames`."""
    return timed(perception.tagger.loaded.device, lambda: perception.run_batch(frames, segmentation))


def alone(perception: Perception, rgb: np.ndarray, segmentation: str | None) -> Timed:
    """One `run` of `rgb`."""
    return timed(perception.tagger.loaded.device, lambda: [perception.run(rgb, segmentation)])


def call(perception: Perception, frames: list[np.ndarray], way: str, n: int,
         segmentation: str | None) -> Timed:
    """A `schedule` entry: the first n frames batched, or frame n alone."""
    if way == "batched":
        return batched(perception, frames[:n], segmentation)
    return alone(perception, frames[n], segmentation)


def schedule(counts: list[int], repeat: int) -> list[tuple[str, int]]:
    """One repeat's calls, interleaved: frame k alone, then (if k + 1 is a batch size) the
    first k + 1 frames batched, for every camera k; reversed on odd repeats (ABBA), so that a
    drift in machine load hits both ways alike. One at a time, n frames cost the sum of the
    first n frames' runs, so each frame runs alone once per repeat whatever the batch sizes."""
    calls = []
    for k in range(max(counts)):
        calls.append(("alone", k))
        if k + 1 in counts:
            calls.append(("batched", k + 1))
    return calls if repeat % 2 == 0 else calls[::-1]


def camera_frames(count: int) -> list[np.ndarray]:
    """`count` frames of SIZE, the sample images in turn (a fifth camera repeats the first)."""
    return [np.asarray(Image.open(os.path.join(REPO, "samples", IMAGES[i % len(IMAGES)]))
                       .convert("RGB").resize((SIZE[1], SIZE[0]), Image.Resampling.BICUBIC))
            for i in range(count)]


def vocabulary_of(classes: int) -> Vocabulary:
    """VOC's first `classes` classes with its background names."""
    voc = load_vocabulary("voc")
    return dataclasses.replace(voc, classes=voc.classes[:classes])


def build_model(seed: int, device: torch.device) -> LoadedModel:
    return from_model(random_vit_b16(seed), device, torch.float32, f"random-vit-b-16-seed{seed}",
                      f"random weights (seed {seed}, float16 values)")


def measure(perception: Perception, counts: list[int], segmentation: str | None, warmup: int,
            repeats: int) -> dict:
    """Per batch size n: the first n frames in one `run_batch` against the same frames through
    `run` one at a time, `repeats` times by `schedule`, after one `run` that pays the first
    call's costs and `warmup` rounds of the schedule; medians per frame, and each batched
    frame's deviation from its own run (the last repeat's)."""
    frames = camera_frames(max(counts))
    perception.run(frames[0], segmentation)
    device = perception.tagger.loaded.device
    for repeat in range(warmup):
        for way, n in schedule(counts, repeat):
            call(perception, frames, way, n, segmentation)
    runs: list[dict[tuple[str, int], Timed]] = []
    calls = sum(len(schedule(counts, r)) for r in range(repeats))
    progress = tqdm(total=calls, desc="bench_batching", unit="call")
    wall, cpu = time.perf_counter(), cpu_seconds()
    for repeat in range(repeats):
        runs.append({})
        for way, n in schedule(counts, repeat):
            progress.set_postfix_str(f"{n} frames batched" if way == "batched" else f"frame {n} alone")
            runs[-1][way, n] = call(perception, frames, way, n, segmentation)
            progress.update()
    progress.close()
    synchronize(device)
    share = (cpu_seconds() - cpu) / ((time.perf_counter() - wall) * torch.get_num_threads())
    rows = []
    for n in counts:
        ways = {"batched": [r["batched", n] for r in runs],
                "one_at_a_time": [Timed(sum(r["alone", k].wall_s for k in range(n)),
                                        sum(r["alone", k].cpu_s for k in range(n)),
                                        [r["alone", k].results[0] for k in range(n)]) for r in runs]}
        per_frame = {name: {"wall_s": statistics.median(t.wall_s for t in timings) / n,
                            "cpu_s": statistics.median(t.cpu_s for t in timings) / n}
                     for name, timings in ways.items()}
        checks = [deviation(one, together) for one, together in
                  zip(ways["one_at_a_time"][-1].results, ways["batched"][-1].results)]
        rows.append({
            "frames": n, "per_frame": per_frame,
            "ratio_wall": per_frame["batched"]["wall_s"] / per_frame["one_at_a_time"]["wall_s"],
            "ratio_cpu": per_frame["batched"]["cpu_s"] / per_frame["one_at_a_time"]["cpu_s"],
            "tags": [len(r.tags.tags) for r in ways["batched"][-1].results],
            "max_abs_score_diff": max(c["max_abs_score_diff"] for c in checks),
            "same_tags": all(c["same_tags"] and c["same_order"] for c in checks),
            "min_mask_agreement": min((c["mask_agreement"] for c in checks
                                       if c["mask_agreement"] is not None), default=None),
        })
    return {"rows": rows, "cpu_share": share}


def markdown(results: dict) -> str:
    """The table and what it was measured on."""
    d, m = results["device"], results["measured"]
    seg = results["segmentation"] or "none"
    lines = [
        f"Batching benchmark (`bench/bench_batching.py{' --quick' if results['quick'] else ''}`"
        f"{' --device cuda' if d['type'] == 'cuda' else ''}), {results['date']}: {d['name']}, "
        f"torch {results['software']['torch']} ({results['software']['torch_threads']} threads), "
        f"ViT-B/16 geometry with random weights, float32, frames of {SIZE[0]}×{SIZE[1]} "
        f"(samples/, one image per camera), vocabulary: VOC's first {results['classes']} classes "
        f"+ {results['background']} background names, masks: {seg}; median of "
        f"{results['repeats']} run(s) of each, the two ways interleaved.",
        "",
        "| frames | `run_batch` per frame (s) | `run` one at a time, per frame (s) | batched / one at a "
        "time (wall) | CPU s per frame, batched / one at a time | batched / one at a time (CPU) | "
        "max \\|Δ score\\| | same tags | mask agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in m["rows"]:
        pf = r["per_frame"]
        agreement = "–" if r["min_mask_agreement"] is None else f"{100 * r['min_mask_agreement']:.2f}%"
        lines.append(
            f"| {r['frames']} | {pf['batched']['wall_s']:.3f} | {pf['one_at_a_time']['wall_s']:.3f} | "
            f"**{r['ratio_wall']:.2f}** | "
            f"{pf['batched']['cpu_s']:.2f} / {pf['one_at_a_time']['cpu_s']:.2f} | "
            f"{r['ratio_cpu']:.2f} | {r['max_abs_score_diff']:.1e} | "
            f"{'yes' if r['same_tags'] else 'no'} | {agreement} |")
    several = [r for r in m["rows"] if r["frames"] > 1]
    if several:
        wall = statistics.mean(r["ratio_wall"] for r in several)
        cpu = statistics.mean(r["ratio_cpu"] for r in several)
        lines += ["", f"Batched / one at a time over 2–{max(r['frames'] for r in several)} frames, "
                  f"mean of the ratios: **{wall:.2f}** wall time, **{cpu:.2f}** CPU time; "
                  f"`batching_pays` says {results['batching_pays']} on this device."]
    if d["type"] == "cpu":
        lines += ["", f"The benchmark got {m['cpu_share']:.0%} of its threads' CPU time (1 = the "
                  "cores to itself)."]
    if d["type"] == "cpu" and m["cpu_share"] < MIN_CPU_SHARE:
        lines += ["", f"**Warning: other processes competed for the CPU during this run** (the "
                  f"benchmark got {m['cpu_share']:.0%} of its threads' CPU time): wall times, and "
                  "their ratios, are unreliable (CPU times too: waiting threads spin)."]
    return "\n".join(lines) + "\n"


def default_out(device: torch.device, quick: bool) -> str:
    return os.path.join(REPO, "bench", "results",
                        f"batching_{device.type}{'_quick' if quick else ''}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--quick", action="store_true", help="under 3 minutes on 2 CPU cores")
    parser.add_argument("--frames", default=FRAMES,
                        help="batch sizes, comma-separated (default %(default)s)")
    parser.add_argument("--segmentation", choices=("clipes", "dmar", "none"),
                        help="masks made per frame (default clipes; --quick dmar)")
    parser.add_argument("--classes", type=int, help="VOC's first N classes (default 20; --quick 5)")
    parser.add_argument("--repeats", type=int, help="timed runs of each (cpu 3, cuda 10; --quick 1, 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--out", help="JSON results (Markdown next to it, .md); default "
                        "bench/results/batching_<device>[_quick].json")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        counts = sorted({int(n) for n in args.frames.split(",") if n.strip()})
    except ValueError as exc:
        parser.error(str(exc))
    if not counts or counts[0] < 1:
        parser.error(f"--frames {args.frames!r}: batch sizes of at least 1")
    warmup, repeats, classes, segmentation = DEFAULTS[device.type, args.quick]
    repeats = args.repeats or repeats
    classes = args.classes or classes
    segmentation = args.segmentation or segmentation
    segmentation = None if segmentation == "none" else segmentation
    out = os.path.abspath(args.out or default_out(device, args.quick))

    start = time.perf_counter()
    loaded = build_model(args.seed, device)
    vocabulary = vocabulary_of(classes)
    perception = Perception(loaded, vocabulary,
                            TagClipSettings(templates=resolve_templates("tagclip")[:TEMPLATES]),
                            text_cache=TextFeatureCache(loaded, cache_dir=None))
    with torch.no_grad():
        measured = measure(perception, counts, segmentation, warmup, repeats)
    results = {"benchmark": "batching", "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
               "device": {"type": device.type, "name": device_name(device), "index": device.index},
               "software": software(), "logical_cpus": os.cpu_count(),
               "weights": loaded.description, "size": list(SIZE), "images": list(IMAGES),
               "classes": len(vocabulary.classes), "background": len(vocabulary.background),
               "segmentation": segmentation, "templates": TEMPLATES, "warmup": warmup,
               "repeats": repeats, "measured": measured, "batching_pays": batching_pays(loaded),
               "wall_s": time.perf_counter() - start}
    save_results(os.path.splitext(out)[0], results, markdown(results))
    print(f"bench_batching: {results['wall_s']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
