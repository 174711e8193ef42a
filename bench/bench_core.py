"""Core benchmark: TagCLIP per-image latency, per-stage time by precision, text encoding and
memory, on the CPU.

    .venv/bin/python bench/bench_core.py [--quick] [--frames-only] [--precisions fp32,bf16]
                                         [--out bench/results/core.json]

(--quick writes bench/results/core_quick.json, --frames-only core_frames.json, unless --out is
given.)

ViT-B/16 geometry with random weights, rounded to float16 values as OpenAI's are (speed does not
depend on the values, and no pretrained weights can be downloaded on the build machine). Every
precision's model is built from the same seeded weights (`from_model(..., dtype)`, the core's
precision rule). Prints the tables, writes the results as JSON to --out and as Markdown next to
it (same name, `.md`), ready to paste into the README.

Criteria checked (PASS/FAIL):
- per-image `TagClip.classify` latency ≤ 1.5 × floor, where floor = one plain vision forward at
  the image's resolution + one plain 224 forward per CWR candidate of that image. "Plain forward"
  is `VisionTower.forward(pixels)` without hooks or masks: open_clip's weights and fused
  attention, with the positional embedding interpolated to the native grid (open_clip's own
  `model.visual` only runs at 224; at 224 the two are compared as a sanity check);
- bfloat16: `classify` at 480×640 in bfloat16 takes ≤ BF16_RATIO_LIMIT (0.55) × its float32
  time, both timed in this run, interleaved (so machine load hits both alike). Skipped, with
  the reason, on a CPU without native bfloat16 (avx512_bf16 / amx_bf16);
- text: prompts truncated after the end-of-text token encode ≥ 3× faster than the full 77-token
  context, with features equal to 1e-5; a warm (in-memory) cache answers ≥ 100× faster than a
  cold encode.
- memory per frame: the peak RSS of one `Perception.run` (tags and a CLIP-ES mask, the node's
  work per frame) over the RSS before it, for camera frames up to 4K at the default
  max_input_side, ≤ FRAME_PEAK_LIMIT_MB (the bound README and config/tagger.yaml state).
Reported beside them: milliseconds per stage (the core's `StageTimer`: preprocess, coarse, dmar,
cwr; clipes or dmar_masks; and the node's overlay) per precision, and each precision's deviation
from float32 (largest score difference, same tags, label-mask agreement).
--quick (a few minutes) times 480×640 only, once (the bfloat16 criterion's size), the
segmentation stages at 224, encodes fewer names, encodes the vocabulary's features with 8
templates instead of 85 (image latency does not depend on the template count), and measures
frames of 480×640 and 3840×2160 with max_input_side 640. --frames-only runs the memory-per-frame
table alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from dataclasses import asdict, dataclass

import numpy as np
import open_clip
import psutil
import torch
from PIL import Image
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import (TagClip, TagClipSettings, TextFeatureCache, Vocabulary,  # noqa: E402
                              load_vocabulary)
from tagclip_ros.core.image import DEFAULT_MAX_INPUT_SIDE, model_input_size  # noqa: E402
from tagclip_ros.core.transform import prepare_image  # noqa: E402
from tagclip_ros.core.device import PRECISIONS  # noqa: E402
from tagclip_ros.core.pipeline import Perceived, Perception  # noqa: E402
from tagclip_ros.core.loading import LoadedModel, from_model  # noqa: E402
from tagclip_ros.core.prompts import resolve_templates  # noqa: E402
from tagclip_ros.core.tags import TagResult  # noqa: E402
from tagclip_ros.core.text import encode_names  # noqa: E402
from tagclip_ros.core.vit import VisionTower  # noqa: E402
from stages import (FrameTiming, cpu_bf16_refusal, deviation, median_timing, parse_precisions,  # noqa: E402
                    precision_refusal, random_vit_b16, tags_cell, timed_classify, timed_frame)

LATENCY_LIMIT = 1.5     # classify ≤ this × floor
TRUNCATE_SPEEDUP = 3.0  # truncated text encoding ≥ this × faster than full context
TRUNCATE_ATOL = 1e-5    # ... with features equal to this
WARM_SPEEDUP = 100.0    # warm cache ≥ this × faster than cold
MIN_CPU_SHARE = 0.8     # below this, other load on the machine distorted the timings
FRAME_SIZES = [(480, 640), (720, 1280), (960, 1280), (1280, 1280), (1080, 1920), (2160, 3840)]
QUICK_FRAME_SIZES = [(480, 640), (2160, 3840)]
QUICK_MAX_INPUT_SIDE = 640
FRAME_PEAK_LIMIT_MB = 3072  # one frame's peak RSS increment at the default limit, any aspect
BF16_RATIO_LIMIT = 0.55  # bfloat16 classify time ≤ this × float32's, at BF16_RATIO_SIZE
BF16_RATIO_SIZE = (480, 640)
REFERENCE = "fp32"       # the precision every other is compared with
DEFAULT_PRECISIONS = "fp32,bf16"
SEGMENTATIONS = ("clipes", "dmar")
MB = 1024 * 1024
T = TypeVar("T")
Templates = str | tuple[str, ...]  # a template set's name or the templates


@dataclass
class LatencyRow:
    """Timings (seconds, medians) for one resolution."""

    height: int
    width: int
    tokens: int
    candidates: int     # CWR candidates TagCLIP found on this image
    classify: float     # TagClip.classify, per image
    coarse: float       # ... of which the coarse (hooked, self-only last block) pass
    cwr: float          # ... of which the batched CWR forward
    plain: float        # one plain forward at this resolution
    plain_224: float    # one plain forward at 224
    peak_rss_increment_mb: float  # RSS peak during one classify minus RSS just before
    cpu_share: float    # CPU share this process got during the timed runs (see CpuShare)

    @property
    def floor(self) -> float:
        return self.plain + self.candidates * self.plain_224

    @property
    def ratio_plain(self) -> float:
        return self.classify / self.plain

    @property
    def ratio_floor(self) -> float:
        return self.classify / self.floor

    @property
    def passed(self) -> bool:
        return self.ratio_floor <= LATENCY_LIMIT

    def as_dict(self) -> dict:
        return {**asdict(self), "floor": self.floor, "ratio_plain": self.ratio_plain,
                "ratio_floor": self.ratio_floor, "coarse_over_plain": self.coarse / self.plain,
                "passed": self.passed}


class PeakRss:
    """Samples this process's RSS every `interval` seconds while the `with` block runs."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def increment_mb(self) -> float:
        return (self.peak - self.start) / MB


class FramePeak:
    """Peak RSS while the `with` block runs, over the RSS just before it: the kernel's
    high-water mark (VmHWM), reset first through /proc/self/clear_refs (Linux ≥ 4.0), so that
    nothing is missed between samples; where that reset is refused, sampled (PeakRss)."""

    def __enter__(self) -> FramePeak:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self._sampler = None
        except OSError:
            self._sampler = PeakRss().__enter__()
        self.start = status_mb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is None:
            self.increment_mb = status_mb("VmHWM") - self.start
        else:
            self._sampler.__exit__(*exc)
            self.increment_mb = self._sampler.increment_mb


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


class CpuShare:
    """CPU time this process used while the `with` block ran, over wall time × torch threads:
    about 1 when it had the cores to itself, lower when other processes competed for them."""

    def __enter__(self) -> CpuShare:
        self._cpu, self._wall = self._cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        self.share = (self._cpu_seconds() - self._cpu) / (wall * torch.get_num_threads())

    @staticmethod
    def _cpu_seconds() -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of one call, and what it returned."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def build_model(seed: int, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """ViT-B/16 with random weights (seeded, so every run and every precision starts from the
    same numbers), rounded to float16 values as OpenAI's released weights are: CLIP-ES then
    computes with them as they are, and reuses TagCLIP's pass through blocks 1..11, as it does
    with OpenAI's weights. `dtype` goes through `from_model`, the core's precision rule."""
    return from_model(random_vit_b16(seed), torch.device("cpu"), dtype, f"random-vit-b-16-seed{seed}",
                      f"random weights (seed {seed}, float16 values)")


def resized(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The image as RGB uint8 (height, width, 3)."""
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def bench_text(loaded: LoadedModel, names: list[str], warm_repeats: int = 5) -> dict:
    """Cold full-context vs cold truncated vs warm-cache encoding of `names` × 85 templates."""
    templates = resolve_templates("tagclip")
    encode_names(loaded, names[:1], templates[:2], truncate=False)  # warm-up of torch itself
    cache = TextFeatureCache(loaded, cache_dir=None)
    # Cold truncated: the cache's first call is encode_names(truncate=True) plus bookkeeping.
    with PeakRss() as truncated_memory:
        truncated_s, truncated = timed(lambda: cache.features(names, templates))
    warm_s = statistics.median(timed(lambda: cache.features(names, templates))[0]
                               for _ in range(warm_repeats))
    assert cache.encoded_names == len(names)  # the first call encoded, the others did not
    with PeakRss() as full_memory:
        full_s, full = timed(lambda: encode_names(loaded, names, templates, truncate=False))
    max_diff = float((truncated - full).abs().max())
    result = {
        "names": names, "templates": len(templates),
        "per_name_s": {"full": full_s / len(names), "truncated": truncated_s / len(names),
                       "warm": warm_s / len(names)},
        "truncated_speedup": full_s / truncated_s,
        "warm_speedup_vs_truncated": truncated_s / warm_s,
        "warm_speedup_vs_full": full_s / warm_s,
        "max_abs_diff_truncated_vs_full": max_diff,
        "peak_rss_increment_mb": {"full": full_memory.increment_mb,
                                  "truncated": truncated_memory.increment_mb},
    }
    result["truncate_passed"] = (result["truncated_speedup"] >= TRUNCATE_SPEEDUP
                                 and max_diff <= TRUNCATE_ATOL)
    result["warm_passed"] = result["warm_speedup_vs_truncated"] >= WARM_SPEEDUP
    return result


def candidate_count(tagger: TagClip, result: TagResult) -> int:
    """How many CWR candidates (crops) TagCLIP re-checked for this result."""
    local = result.refined[:, :len(tagger.vocabulary.classes)].max(dim=0).values
    return len(tagger.candidate_crops(result.refined, local, result.grid))


def interleaved(names: list[str], repeat: int) -> list[str]:
    """`names` in order on even repeats and reversed on odd ones (ABBA), so that a drift in
    machine load hits every precision alike."""
    return names if repeat % 2 == 0 else names[::-1]


@dataclass
class StageRows:
    """Per-precision classify timings at one resolution, and each precision's last result."""

    rows: dict[str, dict]
    results: dict[str, Perceived]


def bench_latency(perceptions: dict[str, Perception], image: Image.Image,
                  resolution: tuple[int, int], repeats: int) -> tuple[LatencyRow, StageRows]:
    """Median classify / plain-forward timings of the float32 model for `image` resized to
    `resolution` (H, W), and the median classify stages of every precision, all interleaved."""
    height, width = resolution
    rgb = resized(image, height, width)
    tagger = perceptions[REFERENCE].tagger
    vision, patch = tagger.vision, tagger.loaded.patch_size
    pixels = prepare_image(rgb, patch)
    pixels_224 = prepare_image(resized(image, 224, 224), patch)
    with torch.no_grad():
        with PeakRss() as memory:  # first call: warm-up, memory and candidate count
            first = timed_classify(perceptions[REFERENCE], rgb)
        candidates = candidate_count(tagger, first.perceived.tags)
        for name in perceptions:  # warm-up of the other precisions
            if name != REFERENCE:
                timed_classify(perceptions[name], rgb)
        vision.forward(pixels)  # warm-up
        vision.forward(pixels_224)
        runs, timings = [], {name: [] for name in perceptions}
        with CpuShare() as cpu:
            for repeat in range(repeats):  # interleaved, so that load changes hit all alike
                for name in interleaved(list(perceptions), repeat):
                    timing = timed_classify(perceptions[name], rgb)
                    timings[name].append(timing)
                    if name == REFERENCE:
                        runs.append(reference_run(timing, vision, pixels, pixels_224))
    medians = [statistics.median(column) for column in zip(*runs)]
    row = LatencyRow(height, width, tokens(*pixels.shape[-2:], patch), candidates, *medians,
                     memory.increment_mb, cpu.share)
    return row, stage_rows(perceptions, timings, row)


def reference_run(timing: FrameTiming, vision: VisionTower, pixels: torch.Tensor,
                  pixels_224: torch.Tensor) -> tuple[float, ...]:
    """One float32 repeat in seconds: classify, its coarse and CWR stages, and the two plain
    forwards timed right after it."""
    return (timing.total_ms / 1e3, timing.stages_ms["coarse"] / 1e3, timing.stages_ms["cwr"] / 1e3,
            timed(lambda: vision.forward(pixels))[0], timed(lambda: vision.forward(pixels_224))[0])


def stage_rows(perceptions: dict[str, Perception], timings: dict[str, list[FrameTiming]],
               row: LatencyRow) -> StageRows:
    """The per-precision classify rows at one resolution (stage medians, CWR candidates)."""
    rows, results = {}, {}
    for name, runs in timings.items():
        results[name] = runs[-1].perceived
        medians = median_timing(runs)
        rows[name] = {"precision": name, "height": row.height, "width": row.width,
                      "tokens": row.tokens, "candidates": candidate_count(perceptions[name].tagger,
                                                                          results[name].tags),
                      "stages_ms": medians["stages_ms"], "classify_ms": medians["total_ms"],
                      "runs": medians["runs"]}
    return StageRows(rows, results)


def bench_segmentation(perceptions: dict[str, Perception], image: Image.Image,
                       resolution: tuple[int, int], repeats: int) -> tuple[dict, dict[str, dict]]:
    """Median stages of `Perception.run` with each segmentation method and the node's overlay,
    per precision, interleaved; and the last results (method → precision → Perceived)."""
    rgb = resized(image, *resolution)
    with torch.no_grad():
        for method in SEGMENTATIONS:  # warm-up
            for perception in perceptions.values():
                timed_frame(perception, rgb, method)
        timings = {(m, p): [] for m in SEGMENTATIONS for p in perceptions}
        with CpuShare() as cpu:
            for repeat in range(repeats):
                for method in SEGMENTATIONS:
                    for name in interleaved(list(perceptions), repeat):
                        timings[method, name].append(timed_frame(perceptions[name], rgb, method))
    rows = [{"precision": p, "segmentation": m, **median_timing(runs)}
            for (m, p), runs in timings.items()]
    results = {m: {p: timings[m, p][-1].perceived for p in perceptions} for m in SEGMENTATIONS}
    return {"height": resolution[0], "width": resolution[1], "repeats": repeats, "rows": rows,
            "cpu_share": cpu.share}, results


def bf16_ratio(classify_rows: list[dict], latency_rows: list[LatencyRow]) -> dict:
    """bfloat16 over float32 `classify` time at BF16_RATIO_SIZE, against BF16_RATIO_LIMIT
    (`passed` None when either was not measured at that size), with the CPU share the timed
    runs got there (below MIN_CPU_SHARE, other load distorted them)."""
    at = {r["precision"]: r["classify_ms"] for r in classify_rows
          if (r["height"], r["width"]) == BF16_RATIO_SIZE}
    share = next((r.cpu_share for r in latency_rows if (r.height, r.width) == BF16_RATIO_SIZE), None)
    result = {"height": BF16_RATIO_SIZE[0], "width": BF16_RATIO_SIZE[1], "limit": BF16_RATIO_LIMIT,
              "fp32_ms": at.get(REFERENCE), "bf16_ms": at.get("bf16"), "ratio": None, "passed": None,
              "cpu_share": share}
    if result["fp32_ms"] and result["bf16_ms"]:
        result["ratio"] = result["bf16_ms"] / result["fp32_ms"]
        result["passed"] = result["ratio"] <= BF16_RATIO_LIMIT
    return result


def deviations(classify: list[StageRows], segmentation: dict[str, dict[str, Perceived]],
               seg_size: tuple[int, int]) -> list[dict]:
    """Each precision against float32 on the benchmark images: scores and tags at every
    classify resolution, label masks (CLIP-ES, DMAR) at the segmentation resolution."""
    out = []
    for measured in classify:
        reference = measured.results[REFERENCE]
        for name, result in measured.results.items():
            if name == REFERENCE:
                continue
            row = next(iter(measured.rows.values()))
            entry = {"precision": name, "height": row["height"], "width": row["width"],
                     **deviation(reference, result)}
            entry.pop("mask_agreement")
            out.append(entry)
    for method, results in segmentation.items():
        for name, result in results.items():
            if name != REFERENCE:
                out.append({"precision": name, "height": seg_size[0], "width": seg_size[1],
                            "segmentation": method, **deviation(results[REFERENCE], result)})
    return out


def bench_frames(loaded: LoadedModel, vocabulary: Vocabulary, templates: Templates,
                 cache: TextFeatureCache, image: Image.Image, sizes: list[tuple[int, int]],
                 max_side: int | None) -> dict:
    """Peak RSS increment and time of one `Perception.run` (tags and a CLIP-ES mask) per frame
    size, at the input limit `max_side`."""
    perception = Perception(loaded, vocabulary, TagClipSettings(templates=templates,
                                                                max_input_side=max_side),
                            text_cache=cache)
    perception.run(resized(image, 224, 224), "clipes")  # warm-up: text features, torch itself
    rows = []
    for height, width in sizes:
        rgb = resized(image, height, width)
        model_h, model_w = perception.model_input_size(height, width)
        native = tokens(*model_input_size(height, width, loaded.patch_size), loaded.patch_size)
        with FramePeak() as peak:
            seconds, perceived = timed(lambda: perception.run(rgb, "clipes"))
        assert perceived.segmentation.mask.shape == (height, width)
        rows.append({"height": height, "width": width, "model_height": model_h,
                     "model_width": model_w, "tokens": tokens(model_h, model_w, loaded.patch_size),
                     "tags": len(perceived.tags.tags), "seconds": seconds,
                     "peak_rss_increment_mb": peak.increment_mb,
                     "native_block_attention_mb": attention_mb(loaded, native)})
    limit_applies = max_side == DEFAULT_MAX_INPUT_SIDE
    return {"max_input_side": max_side, "limit_mb": FRAME_PEAK_LIMIT_MB, "rows": rows,
            "passed": not limit_applies or all(r["peak_rss_increment_mb"] <= FRAME_PEAK_LIMIT_MB
                                               for r in rows)}


def tokens(height: int, width: int, patch: int) -> int:
    """Tokens of a height × width model input: one per patch and the class token."""
    return (height // patch) * (width // patch) + 1


def attention_mb(loaded: LoadedModel, count: int) -> float:
    """MB of one block's attention maps at `count` tokens, every head's materialised in
    float32 (what explicit attention holds at once)."""
    heads = loaded.model.visual.transformer.resblocks[0].attn.num_heads
    return heads * count ** 2 * 4 / MB


def open_clip_check(loaded: LoadedModel, repeats: int) -> dict:
    """At 224, our plain forward against open_clip's own `model.visual` (pooled) forward."""
    vision, pixels = VisionTower(loaded), torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        loaded.model.visual(pixels)  # warm-up
        vision.forward(pixels)
        ours = statistics.median(timed(lambda: vision.forward(pixels))[0] for _ in range(repeats))
        theirs = statistics.median(timed(lambda: loaded.model.visual(pixels))[0]
                                   for _ in range(repeats))
    return {"vision_tower_224_s": ours, "open_clip_visual_224_s": theirs, "ratio": ours / theirs}


def ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def markdown(results: dict) -> str:
    """README-ready Markdown tables of the results."""
    m, lat, text, mem = results["machine"], results["latency"], results["text"], results["memory"]
    lines = [
        f"Core benchmark (`bench/bench_core.py{' --quick' if results['quick'] else ''}`), "
        f"{results['date']}: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads), ViT-B/16 geometry with random weights "
        f"({precisions_note(results['precision'])}), "
        f"image `{lat['image']}` resized to each resolution, vocabulary {lat['vocabulary']}; "
        f"median of {lat['repeats']} run(s) after a warm-up.",
        "",
        "| input (H×W) | tokens | CWR candidates | `classify` (s) | plain forward (s) | "
        "× plain | floor (s) | × floor | coarse pass × plain | ≤ 1.5× floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lat["rows"]:
        lines.append(
            f"| {r['height']}×{r['width']} | {r['tokens']} | {r['candidates']} | {r['classify']:.2f} | "
            f"{r['plain']:.2f} | {r['ratio_plain']:.2f} | {r['floor']:.2f} | "
            f"{r['ratio_floor']:.2f} | {r['coarse_over_plain']:.2f} | {ok(r['passed'])} |")
    check = results["open_clip_check"]
    lines += [
        "",
        "Plain forward = `VisionTower.forward(pixels)` without hooks or masks (open_clip's weights "
        "and fused attention, positional embedding interpolated to the native grid; open_clip's "
        "`model.visual` only runs at 224, where it takes "
        f"{check['open_clip_visual_224_s']:.2f} s against our {check['vision_tower_224_s']:.2f} s). "
        "Floor = plain forward at the input's resolution + one plain 224 forward "
        "(" + ", ".join(f"{r['plain_224']:.2f} s" for r in lat["rows"]) + ") per CWR candidate. "
        "Random weights make almost every class a CWR candidate; with real weights there are "
        "usually a few, and × floor then tends to the coarse pass × plain column (the pass "
        "whose explicit attention maps DMAR needs).",
    ]
    lines += [""] + precision_markdown(results["precision"])
    lines += [
        "",
        f"| text encoding ({len(text['names'])} name(s) × {text['templates']} templates) | per name | "
        "speed-up | criterion |",
        "|---|---|---|---|",
        f"| cold, full 77-token context | {text['per_name_s']['full'] * 1e3:.0f} ms | 1× | |",
        f"| cold, truncated after end-of-text | {text['per_name_s']['truncated'] * 1e3:.0f} ms | "
        f"{text['truncated_speedup']:.1f}× | ≥ 3×, max abs diff "
        f"{text['max_abs_diff_truncated_vs_full']:.1e} ≤ 1e-5: {ok(text['truncate_passed'])} |",
        f"| warm cache (memory) | {text['per_name_s']['warm'] * 1e6:.1f} µs | "
        f"{text['warm_speedup_vs_truncated']:,.0f}× (vs truncated) | ≥ 100×: "
        f"{ok(text['warm_passed'])} |",
        "",
        "| memory | MB |",
        "|---|---|",
        f"| RSS after loading the model | {mem['rss_after_model_mb']:.0f} |",
        f"| RSS after the benchmark | {mem['rss_end_mb']:.0f} |",
        f"| process peak RSS (ru_maxrss) | {mem['peak_rss_mb']:.0f} |",
        f"| peak increment while encoding text, full context / truncated | "
        f"{text['peak_rss_increment_mb']['full']:.0f} / "
        f"{text['peak_rss_increment_mb']['truncated']:.0f} |",
    ]
    lines += [f"| peak increment during one `classify`, {r['height']}×{r['width']} | "
              f"{r['peak_rss_increment_mb']:.0f} |" for r in lat["rows"]]
    lines += ["", "Increments are sampled RSS peaks minus the RSS just before (every 2 ms); they are "
              "approximate, as the allocator keeps some freed memory between calls."]
    lines += ["", frames_markdown(results["frames"]).rstrip("\n")]
    shares = {f"{r['height']}×{r['width']}": r["cpu_share"] for r in lat["rows"]}
    shares.update(text=text["cpu_share"], segmentation=results["precision"]["segmentation"]["cpu_share"],
                  run=results["cpu_share"])
    if min(shares.values()) < MIN_CPU_SHARE:
        lines += ["", "**Warning: other processes competed for the CPU during this run** (share of "
                  "its threads' CPU time the benchmark got: " + ", ".join(
                      f"{k} {v:.0%}" for k, v in shares.items()) + "); timings, and ratios "
                  "between them, are unreliable."]
    return "\n".join(lines) + "\n"


def precisions_note(precision: dict) -> str:
    """Which precisions the tables cover: float32 everywhere, the others per stage."""
    others = [p for p in precision["precisions"] if p != REFERENCE]
    return "float32" + (f"; {', '.join(others)} in the per-stage tables" if others else "")


def ms(value: float) -> str:
    """Milliseconds with as many digits as they deserve."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def precision_markdown(precision: dict) -> list[str]:
    """The per-stage tables by precision, the bfloat16 criterion and the deviation table."""
    names = precision["precisions"]
    lines = [f"Per-stage time by precision (the core's `StageTimer`, median of "
             f"{precision['repeats']} run(s) after a warm-up, precisions interleaved run by run; "
             f"every precision built from the same random weights by `from_model`): "
             f"`TagClip.classify`, ms.", "",
             "| precision | input (H×W) | CWR candidates | preprocess | coarse | dmar | cwr | "
             "`classify` | × fp32 |", "|---|---|---|---|---|---|---|---|---|"]
    reference = {(r["height"], r["width"]): r["classify_ms"] for r in precision["classify_rows"]
                 if r["precision"] == REFERENCE}
    for r in sorted(precision["classify_rows"],
                    key=lambda r: (r["height"], r["width"], names.index(r["precision"]))):
        st = r["stages_ms"]
        lines.append(f"| {r['precision']} | {r['height']}×{r['width']} | {r['candidates']} | "
                     + " | ".join(ms(st.get(s, 0.0)) for s in ("preprocess", "coarse", "dmar", "cwr"))
                     + f" | {ms(r['classify_ms'])} | "
                     f"{r['classify_ms'] / reference[r['height'], r['width']]:.2f} |")
    lines += ["", bf16_ratio_line(precision["bf16_ratio"])]
    lines += [f"- {name} skipped: {reason}" for name, reason in precision["skipped"].items()]
    lines += [""] + segmentation_markdown(precision["segmentation"], names)
    lines += [""] + deviation_markdown(precision["deviation"])
    return lines


def bf16_ratio_line(ratio: dict) -> str:
    """The bfloat16 criterion as one README line."""
    size = f"{ratio['height']}×{ratio['width']}"
    if ratio["ratio"] is None:
        return f"bf16 / fp32 `classify` time at {size}: not measured (≤ {ratio['limit']} asked)."
    share = ratio.get("cpu_share")
    warning = (f" The benchmark got {share:.0%} of its threads' CPU time there: other load "
               "distorted the timings." if share is not None and share < MIN_CPU_SHARE else "")
    return (f"**bf16 / fp32 `classify` time at {size}: {ratio['ratio']:.2f}** "
            f"({ms(ratio['bf16_ms'])} / {ms(ratio['fp32_ms'])} ms; ≤ {ratio['limit']}: "
            f"{'PASS' if ratio['passed'] else 'FAIL'}).{warning}")


def segmentation_markdown(segmentation: dict, names: list[str]) -> list[str]:
    """`Perception.run` per precision and segmentation method, with the overlay."""
    lines = [f"`Perception.run` at {segmentation['height']}×{segmentation['width']} with a label "
             "mask, and the overlay the node draws when `/overlay` is watched (not in the total), "
             "ms:", "",
             "| precision | segmentation | preprocess | coarse | dmar | cwr | clipes | dmar_masks | "
             "`run` total | overlay |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(segmentation["rows"], key=lambda r: (r["segmentation"], names.index(r["precision"]))):
        st = r["stages_ms"]
        cells = [ms(st[s]) if s in st else "–" for s in
                 ("preprocess", "coarse", "dmar", "cwr", "clipes", "dmar_masks")]
        lines.append(f"| {r['precision']} | {r['segmentation']} | " + " | ".join(cells)
                     + f" | {ms(r['total_ms'])} | {ms(st.get('overlay', 0.0))} |")
    return lines


def deviation_markdown(rows: list[dict]) -> list[str]:
    """Each precision against float32 on the same images."""
    if not rows:
        return ["No precision besides fp32 was measured, so there is no deviation to report."]
    lines = ["Deviation from fp32 on the same images (with random weights the scores are nearly "
             "uniform, so tag order is fragile; real weights separate classes far more):", "",
             "| precision | input (H×W) | from | max \\|Δ score\\| | same tags | label-mask agreement |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        source = f"`run(..., \"{r['segmentation']}\")`" if "segmentation" in r else "`classify`"
        agreement = "–" if r.get("mask_agreement") is None else f"{100 * r['mask_agreement']:.2f}%"
        lines.append(f"| {r['precision']} | {r['height']}×{r['width']} | {source} | "
                     f"{r['max_abs_score_diff']:.1e} | {tags_cell(r)} | {agreement} |")
    return lines


def frames_markdown(frames: dict) -> str:
    """The memory-per-frame table."""
    limit = frames["max_input_side"]
    lines = [
        f"Memory per frame: one `Perception.run` (TagCLIP tags and a CLIP-ES label mask at the "
        f"frame's size, the node's work per frame) with max_input_side {limit}; peak RSS over "
        f"the RSS before it (the kernel's high-water mark, reset before the frame).",
        "",
        "| frame (H×W) | model input | tokens | tags | time (s) | peak RSS increment (MB) | "
        "one block's attention maps at native size (computed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in frames["rows"]:
        native = r["native_block_attention_mb"]
        lines.append(
            f"| {r['height']}×{r['width']} | {r['model_height']}×{r['model_width']} | "
            f"{r['tokens']} | {r['tags']} | {r['seconds']:.1f} | {r['peak_rss_increment_mb']:.0f} | "
            + (f"{native / 1024:.1f} GB |" if native >= 1024 else f"{native:.0f} MB |"))
    if limit == DEFAULT_MAX_INPUT_SIDE:
        lines += ["", f"Every frame ≤ {frames['limit_mb']} MB: "
                  f"{'PASS' if frames['passed'] else 'FAIL'}"]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def usable_precisions(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """The precisions this CPU runs (float32, the reference, always first) and, for the others,
    why not. bfloat16 needs native CPU support only: the core computes it through
    `from_model(..., dtype)` whatever the loader's rules; float16 is the core's to refuse."""
    names, skipped = [REFERENCE], {}
    for name in requested:
        if name == REFERENCE:
            continue
        reason = cpu_bf16_refusal() if name == "bf16" else precision_refusal(name, torch.device("cpu"))
        if reason:
            skipped[name] = reason
            print(f"skipping {name}: {reason}")
        else:
            names.append(name)
    return names, skipped


def build_perceptions(seed: int, names: list[str], vocabulary: Vocabulary,
                      templates: Templates, reference: LoadedModel) -> dict[str, Perception]:
    """One Perception per precision over the same seeded weights (the float32 model given).
    They share the float32 model's in-memory text features: the core keeps the text tower in
    float32 at every precision, so each would encode the very same features again."""
    cache = TextFeatureCache(reference, cache_dir=None)
    perceptions = {}
    for name in names:
        loaded = reference if name == REFERENCE else build_model(seed, PRECISIONS[name])
        perceptions[name] = Perception(loaded, vocabulary, TagClipSettings(templates=templates),
                                       text_cache=cache)
    return perceptions


def run(quick: bool, image_path: str, seed: int, precisions: list[str]) -> dict:
    """All measurements, as the JSON results."""
    resolutions = [BF16_RATIO_SIZE] if quick else [(224, 224), BF16_RATIO_SIZE, (512, 512)]
    segmentation_size = (224, 224) if quick else BF16_RATIO_SIZE
    repeats = 1 if quick else 3
    vocabulary = load_vocabulary("voc")
    text_names = list(vocabulary.classes[:1 if quick else 10])
    templates = resolve_templates("tagclip")[:8] if quick else "tagclip"
    names, skipped = usable_precisions(precisions)

    loaded = build_model(seed)
    memory = {"rss_after_model_mb": rss_mb()}
    steps = tqdm(total=5 + len(resolutions), desc="bench_core", unit="step")
    steps.set_postfix_str("text encoding")
    with CpuShare() as text_cpu:
        text = bench_text(loaded, text_names)
    text["cpu_share"] = text_cpu.share
    steps.update()
    steps.set_postfix_str("models and vocabulary features")
    perceptions = build_perceptions(seed, names, vocabulary, templates, loaded)
    steps.update()
    check = open_clip_check(loaded, repeats=3)
    steps.update()
    image = Image.open(image_path).convert("RGB")
    rows, classify = [], []
    for height, width in resolutions:
        steps.set_postfix_str(f"{height}x{width}")
        row, measured = bench_latency(perceptions, image, (height, width), repeats)
        rows.append(row)
        classify.append(measured)
        steps.update()
    steps.set_postfix_str("segmentation stages")
    segmentation, masks = bench_segmentation(perceptions, image, segmentation_size, repeats)
    steps.update()
    steps.set_postfix_str("memory per frame")
    frames = frames_for(quick, loaded, vocabulary, templates, perceptions[REFERENCE].tagger.text_cache,
                        image)
    steps.update()
    steps.close()
    memory.update(rss_end_mb=rss_mb(),
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    classify_rows = [r for measured in classify for r in measured.rows.values()]
    return {
        "benchmark": "core", "quick": quick, "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "model": {"name": "ViT-B-16", "weights": loaded.description, "dtype": "float32",
                  "device": "cpu"},
        "latency": {
            "image": os.path.relpath(image_path, REPO),
            "vocabulary": f"voc ({len(vocabulary.classes)} classes + "
                          f"{len(vocabulary.background)} background)",
            "vocabulary_templates": len(resolve_templates(templates)),
            "repeats": repeats, "limit": LATENCY_LIMIT,
            "rows": [row.as_dict() for row in rows],
            "passed": all(row.passed for row in rows),
        },
        "precision": {
            "precisions": names, "skipped": skipped, "repeats": repeats,
            "classify_rows": classify_rows, "segmentation": segmentation,
            "deviation": deviations(classify, masks, segmentation_size),
            "bf16_ratio": bf16_ratio(classify_rows, rows),
        },
        "open_clip_check": check,
        "text": text,
        "memory": memory,
        "frames": frames,
    }


def frames_for(quick: bool, loaded: LoadedModel, vocabulary: Vocabulary, templates: Templates,
               cache: TextFeatureCache, image: Image.Image) -> dict:
    """The memory-per-frame measurements of a full or a quick run."""
    if quick:
        return bench_frames(loaded, vocabulary, templates, cache, image, QUICK_FRAME_SIZES,
                            QUICK_MAX_INPUT_SIDE)
    return bench_frames(loaded, vocabulary, templates, cache, image, FRAME_SIZES,
                        DEFAULT_MAX_INPUT_SIDE)


def run_frames(quick: bool, image_path: str, seed: int) -> dict:
    """The memory-per-frame table alone, as the JSON results."""
    templates = resolve_templates("tagclip")[:8]  # the frame's cost does not depend on them
    loaded = build_model(seed)
    frames = frames_for(quick, loaded, load_vocabulary("voc"), templates,
                        TextFeatureCache(loaded, cache_dir=None),
                        Image.open(image_path).convert("RGB"))
    return {"benchmark": "core-frames", "quick": quick, "date": time.strftime("%Y-%m-%d"),
            "machine": machine(), "image": os.path.relpath(image_path, REPO),
            "model": {"name": "ViT-B-16", "weights": loaded.description, "dtype": "float32",
                      "device": "cpu"},
            "frames": frames, "passed": frames["passed"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    parser.add_argument("--frames-only", action="store_true",
                        help="only the memory-per-frame table")
    parser.add_argument("--out", help="JSON results file, the Markdown going next to it (.md); "
                        "default bench/results/core.json (--quick: core_quick.json, "
                        "--frames-only: core_frames.json, so that a partial run never "
                        "overwrites the full results)")
    parser.add_argument("--image", default=os.path.join(REPO, "samples", "astronaut.jpg"),
                        help="image resized to each resolution (its content sets the CWR "
                             "candidate count)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--precisions", default=DEFAULT_PRECISIONS,
                        help="comma-separated precisions for the per-stage table (fp32, the "
                             "reference, is always measured); default %(default)s")
    args = parser.parse_args(argv)
    try:
        precisions = parse_precisions(args.precisions)
    except ValueError as exc:
        parser.error(str(exc))
    name = "core_frames" if args.frames_only else "core"
    args.out = args.out or os.path.join(REPO, "bench", "results",
                                        f"{name}_quick.json" if args.quick else f"{name}.json")

    start = time.perf_counter()
    with CpuShare() as cpu:
        if args.frames_only:
            results = run_frames(args.quick, os.path.abspath(args.image), args.seed)
        else:
            results = run(args.quick, os.path.abspath(args.image), args.seed, precisions)
            results["passed"] = (results["latency"]["passed"] and results["frames"]["passed"]
                                 and results["text"]["truncate_passed"]
                                 and results["text"]["warm_passed"]
                                 and results["precision"]["bf16_ratio"]["passed"] is not False)
    results.update(cpu_share=cpu.share, load_average=os.getloadavg(),
                   wall_s=time.perf_counter() - start)

    table = frames_only_markdown(results) if args.frames_only else markdown(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    md_path = os.path.splitext(args.out)[0] + ".md"
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(table)
    print(table)
    if not args.frames_only:
        print(bf16_ratio_line(results["precision"]["bf16_ratio"]).replace("**", ""))
    print(f"overall: {'PASS' if results['passed'] else 'FAIL'} in {results['wall_s']:.0f} s; "
          f"wrote {args.out} and {md_path}")
    return 0 if results["passed"] else 1


def frames_only_markdown(results: dict) -> str:
    """README-ready Markdown of a --frames-only run."""
    m = results["machine"]
    return (f"Core benchmark, memory per frame (`bench/bench_core.py --frames-only"
            f"{' --quick' if results['quick'] else ''}`), {results['date']}: {m['cpu']}, "
            f"{m['logical_cpus']} logical CPUs, torch {m['torch']} ({m['torch_threads']} "
            f"threads), float32, {results['model']['weights']}, image "
            f"`{results['image']}` resized to each frame size, vocabulary voc.\n\n"
            + frames_markdown(results["frames"]))


if __name__ == "__main__":
    sys.exit(main())
