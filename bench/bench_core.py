"""Core benchmark: TagCLIP per-image latency, text encoding and memory, on the CPU.

    .venv/bin/python bench/bench_core.py [--quick] [--frames-only] [--out bench/results/core.json]

(--quick writes bench/results/core_quick.json, --frames-only core_frames.json, unless --out is
given.)

ViT-B/16 geometry with random weights, rounded to float16 values as OpenAI's are (speed does not
depend on the values, and no pretrained weights can be downloaded on the build machine). Prints
the tables, writes the results as JSON to --out and as Markdown next to it (same name, `.md`),
ready to paste into the README.

Criteria checked (PASS/FAIL):
- per-image `TagClip.classify` latency ≤ 1.5 × floor, where floor = one plain vision forward at
  the image's resolution + one plain 224 forward per CWR candidate of that image. "Plain forward"
  is `VisionTower.forward(pixels)` without hooks or masks: open_clip's weights and fused
  attention, with the positional embedding interpolated to the native grid (open_clip's own
  `model.visual` only runs at 224; at 224 the two are compared as a sanity check);
- text: prompts truncated after the end-of-text token encode ≥ 3× faster than the full 77-token
  context, with features equal to 1e-5; a warm (in-memory) cache answers ≥ 100× faster than a
  cold encode.
- memory per frame: the peak RSS of one `Perception.run` (tags and a CLIP-ES mask, the node's
  work per frame) over the RSS before it, for camera frames up to 4K at the default
  max_input_side, ≤ FRAME_PEAK_LIMIT_MB (the bound README and config/tagger.yaml state).
--quick (~1 min) times 224 only, once, encodes fewer names, encodes the vocabulary's
features with 8 templates instead of 85 (image latency does not depend on the template count),
and measures frames of 480×640 and 3840×2160 with max_input_side 640. --frames-only runs the
memory-per-frame table alone.
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
from tagclip_ros.core.image import DEFAULT_MAX_INPUT_SIDE, model_input_size, prepare_image  # noqa: E402
from tagclip_ros.core.pipeline import Perception  # noqa: E402
from tagclip_ros.core.loading import LoadedModel, from_model  # noqa: E402
from tagclip_ros.core.prompts import resolve_templates  # noqa: E402
from tagclip_ros.core.tagclip import Crop, TagResult  # noqa: E402
from tagclip_ros.core.text import encode_names  # noqa: E402
from tagclip_ros.core.vit import AttentionHook, VisionTower  # noqa: E402

LATENCY_LIMIT = 1.5     # classify ≤ this × floor
TRUNCATE_SPEEDUP = 3.0  # truncated text encoding ≥ this × faster than full context
TRUNCATE_ATOL = 1e-5    # ... with features equal to this
WARM_SPEEDUP = 100.0    # warm cache ≥ this × faster than cold
MIN_CPU_SHARE = 0.8     # below this, other load on the machine distorted the timings
FRAME_SIZES = [(480, 640), (720, 1280), (960, 1280), (1280, 1280), (1080, 1920), (2160, 3840)]
QUICK_FRAME_SIZES = [(480, 640), (2160, 3840)]
QUICK_MAX_INPUT_SIDE = 640
FRAME_PEAK_LIMIT_MB = 3072  # one frame's peak RSS increment at the default limit, any aspect
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


class TimedTagClip(TagClip):
    """TagClip that records how long the last image's coarse pass and CWR pass took."""

    def classify(self, rgb: np.ndarray, hook: AttentionHook | None = None) -> TagResult:
        self.stages = {"coarse": 0.0, "cwr": 0.0}
        return super().classify(rgb, hook)

    def coarse_scores(self, pixels: torch.Tensor, text: torch.Tensor,
                      hook: AttentionHook | None = None) -> tuple[torch.Tensor, ...]:
        start = time.perf_counter()
        try:
            return super().coarse_scores(pixels, text, hook)
        finally:
            self.stages["coarse"] += time.perf_counter() - start

    def reidentify(self, pixels: torch.Tensor, crops: list[Crop], text: torch.Tensor) -> list[float]:
        start = time.perf_counter()
        try:
            return super().reidentify(pixels, crops, text)
        finally:
            self.stages["cwr"] += time.perf_counter() - start


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


def build_model(seed: int) -> LoadedModel:
    """ViT-B/16 with random weights (seeded, so every run scores the same), rounded to float16
    values as OpenAI's released weights are: CLIP-ES then computes with them as they are, and
    reuses TagCLIP's pass through blocks 1..11, as it does with OpenAI's weights."""
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)  # OpenAI's network
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    return from_model(model, torch.device("cpu"), torch.float32, f"random-vit-b-16-seed{seed}",
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


def bench_latency(tagger: TimedTagClip, image: Image.Image, resolution: tuple[int, int],
                  repeats: int) -> LatencyRow:
    """Median classify / plain-forward timings for `image` resized to `resolution` (H, W)."""
    height, width = resolution
    rgb = resized(image, height, width)
    vision, patch = tagger.vision, tagger.loaded.patch_size
    pixels = prepare_image(rgb, patch)
    pixels_224 = prepare_image(resized(image, 224, 224), patch)
    with torch.no_grad():
        with PeakRss() as memory:  # first call: warm-up, memory and candidate count
            result = tagger.classify(rgb)
        local = result.refined[:, :len(tagger.vocabulary.classes)].max(dim=0).values
        candidates = len(tagger.candidate_crops(result.refined, local, result.grid))
        vision.forward(pixels)  # warm-up
        vision.forward(pixels_224)
        runs = []
        with CpuShare() as cpu:
            for _ in range(repeats):  # interleaved, so that load changes hit all three alike
                classify_s = timed(lambda: tagger.classify(rgb))[0]
                runs.append((classify_s, tagger.stages["coarse"], tagger.stages["cwr"],
                             timed(lambda: vision.forward(pixels))[0],
                             timed(lambda: vision.forward(pixels_224))[0]))
    medians = [statistics.median(column) for column in zip(*runs)]
    return LatencyRow(height, width, pixels.shape[-2] * pixels.shape[-1] // patch ** 2 + 1,
                      candidates, *medians, memory.increment_mb, cpu.share)


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


def markdown(results: dict) -> str:
    """README-ready Markdown tables of the results."""
    m, lat, text, mem = results["machine"], results["latency"], results["text"], results["memory"]
    ok = lambda passed: "PASS" if passed else "FAIL"  # noqa: E731
    lines = [
        f"Core benchmark (`bench/bench_core.py{' --quick' if results['quick'] else ''}`), "
        f"{results['date']}: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads), float32, ViT-B/16 geometry with random weights, "
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
    shares.update(text=text["cpu_share"], run=results["cpu_share"])
    if min(shares.values()) < MIN_CPU_SHARE:
        lines += ["", "**Warning: other processes competed for the CPU during this run** (share of "
                  "its threads' CPU time the benchmark got: " + ", ".join(
                      f"{k} {v:.0%}" for k, v in shares.items()) + "); timings, and ratios "
                  "between them, are unreliable."]
    return "\n".join(lines) + "\n"


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


def run(quick: bool, image_path: str, seed: int) -> dict:
    """All measurements, as the JSON results."""
    resolutions = [(224, 224)] if quick else [(224, 224), (480, 640), (512, 512)]
    repeats = 1 if quick else 3
    vocabulary = load_vocabulary("voc")
    text_names = list(vocabulary.classes[:1 if quick else 10])
    templates = resolve_templates("tagclip")[:8] if quick else "tagclip"

    loaded = build_model(seed)
    memory = {"rss_after_model_mb": rss_mb()}
    steps = tqdm(total=4 + len(resolutions), desc="bench_core", unit="step")
    steps.set_postfix_str("text encoding")
    with CpuShare() as text_cpu:
        text = bench_text(loaded, text_names)
    text["cpu_share"] = text_cpu.share
    steps.update()
    steps.set_postfix_str("vocabulary features")
    tagger = TimedTagClip(loaded, vocabulary, TagClipSettings(templates=templates),
                          TextFeatureCache(loaded, cache_dir=None))
    steps.update()
    check = open_clip_check(loaded, repeats=3)
    steps.update()
    image = Image.open(image_path).convert("RGB")
    rows = []
    for height, width in resolutions:
        steps.set_postfix_str(f"{height}x{width}")
        rows.append(bench_latency(tagger, image, (height, width), repeats))
        steps.update()
    steps.set_postfix_str("memory per frame")
    frames = frames_for(quick, loaded, vocabulary, templates, tagger.text_cache, image)
    steps.update()
    steps.close()
    memory.update(rss_end_mb=rss_mb(),
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
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
    args = parser.parse_args(argv)
    name = "core_frames" if args.frames_only else "core"
    args.out = args.out or os.path.join(REPO, "bench", "results",
                                        f"{name}_quick.json" if args.quick else f"{name}.json")

    start = time.perf_counter()
    with CpuShare() as cpu:
        if args.frames_only:
            results = run_frames(args.quick, os.path.abspath(args.image), args.seed)
        else:
            results = run(args.quick, os.path.abspath(args.image), args.seed)
            results["passed"] = (results["latency"]["passed"] and results["frames"]["passed"]
                                 and results["text"]["truncate_passed"]
                                 and results["text"]["warm_passed"])
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
