"""What the benchmarks share about where a frame's time goes and what each precision costs.

- `timed_frame`: one `Perception.run` timed per stage (the core's `StageTimer`), plus the overlay
  the node draws when `/overlay` is watched, under stage "overlay";
- `precision_refusal`: why a precision cannot run on a device (the core's rule, and on the CPU
  whether it has native bfloat16), so that skipped rows carry their reason;
- `deviation`: how far a precision's tags, scores and label masks are from float32's;
- `random_vit_b16`: the ViT-B/16-geometry CLIP with seeded random weights that the
  benchmarks time (no pretrained weights can be downloaded on the build machine).
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from open_clip.model import CLIP

from tagclip_ros.core.device import PRECISIONS, resolve_precision
from tagclip_ros.core.doctor import CPU_BF16_FLAGS, cpu_bf16_native
from tagclip_ros.core.overlay import render_overlay, tag_captions
from tagclip_ros.core.pipeline import Perceived, Perception
from tagclip_ros.core.profile import STAGES, StageTimer

TAG_STAGES = ("preprocess", "coarse", "dmar", "cwr")
MODE_STAGES = {None: TAG_STAGES, "clipes": TAG_STAGES + ("clipes",),
               "dmar": TAG_STAGES + ("dmar_masks",)}


@dataclass
class FrameTiming:
    """One frame: milliseconds per stage, the run's total (overlay excluded) and its result."""

    stages_ms: dict[str, float]
    total_ms: float
    perceived: Perceived


def random_vit_b16(seed: int) -> CLIP:
    """ViT-B/16 (OpenAI's network: QuickGELU) with seeded random float32 weights rounded to
    float16 values, as OpenAI's released weights are: the same seed gives the same weights, so
    every precision of a benchmark starts from one set of numbers."""
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    return model.eval()


def draw_overlay(rgb: np.ndarray, perceived: Perceived) -> np.ndarray:
    """The overlay picture the node publishes for a frame (captions as
    `tagclip_ros.node.conversions.result_messages` writes them, same drawing function)."""
    mask = perceived.segmentation.mask if perceived.segmentation is not None else None
    return render_overlay(rgb, mask, tag_captions(perceived.tags.tags))


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall time covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_frame(perception: Perception, rgb: np.ndarray, segmentation: str | None,
                overlay: bool = True) -> FrameTiming:
    """`perception.run(rgb, segmentation)` with its stages timed, and (if `overlay`) the
    overlay drawn under stage "overlay"; total_ms is the run's wall time, device work included."""
    device = perception.tagger.loaded.device
    timer = StageTimer(device)
    synchronize(device)
    start = time.perf_counter()
    perceived = perception.run(rgb, segmentation, timer)
    synchronize(device)
    total_ms = (time.perf_counter() - start) * 1e3
    if overlay:
        with timer.stage("overlay"):
            draw_overlay(rgb, perceived)
    return FrameTiming(dict(timer.ms), total_ms, perceived)


def timed_classify(perception: Perception, rgb: np.ndarray) -> FrameTiming:
    """`TagClip.classify` alone with its stages timed (no segmentation, no overlay)."""
    device = perception.tagger.loaded.device
    timer = StageTimer(device)
    synchronize(device)
    start = time.perf_counter()
    result = perception.tagger.classify(rgb, timer=timer)
    synchronize(device)
    return FrameTiming(dict(timer.ms), (time.perf_counter() - start) * 1e3, Perceived(result, None, 0.0))


def median_timing(timings: Iterable[FrameTiming]) -> dict:
    """Median milliseconds per stage (in the core's stage order) and of the total."""
    timings = list(timings)
    names = [s for s in STAGES if any(s in t.stages_ms for t in timings)]
    stages = {s: statistics.median(t.stages_ms.get(s, 0.0) for t in timings) for s in names}
    return {"stages_ms": stages, "total_ms": statistics.median(t.total_ms for t in timings),
            "runs": len(timings)}


def cpu_bf16_refusal() -> str | None:
    """Why this CPU cannot run bfloat16 at speed (no native bfloat16 matrix instructions, as
    `tagclip doctor` reads them off /proc/cpuinfo: avx512_bf16 or amx_bf16 on x86), or None
    when it can."""
    machine = platform.machine()
    native = cpu_bf16_native("/proc/cpuinfo", machine)
    if native is None:
        return f"whether this CPU ({machine}) has native bfloat16 is unknown (/proc/cpuinfo)"
    if not native:
        flags = " or ".join(sorted(CPU_BF16_FLAGS.get(machine, ())))
        return (f"this CPU has no native bfloat16 ({flags} missing from /proc/cpuinfo): torch "
                "would emulate it, slower than float32")
    return None


def precision_refusal(precision: str, device: torch.device) -> str | None:
    """Why `precision` cannot run on `device` (the core's own rule, `resolve_precision`, then
    native bfloat16 on the CPU), or None when it can."""
    try:
        resolve_precision(precision, device)
    except ValueError as exc:
        return str(exc)
    if precision == "bf16" and device.type == "cpu":
        return cpu_bf16_refusal()
    return None


def parse_precisions(text: str) -> list[str]:
    """A comma-separated precision list (fp32,bf16) checked against the core's names."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PRECISIONS]
    if unknown or not names:
        raise ValueError(f"precisions {text!r}: each must be one of {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(names))


def mask_agreement(reference: Perceived, other: Perceived) -> float | None:
    """Fraction of pixels whose label is the same in both masks (None without masks)."""
    if reference.segmentation is None or other.segmentation is None:
        return None
    return float(np.mean(reference.segmentation.mask == other.segmentation.mask))


def deviation(reference: Perceived, other: Perceived) -> dict:
    """How `other` differs from `reference` (float32) on the same image: the largest absolute
    final-score difference, whether the tags are the same classes (and in the same order; the
    classes only one of them tagged), and the label-mask agreement where both made a mask."""
    diff = np.abs(np.asarray(reference.tags.scores, np.float64) - np.asarray(other.tags.scores, np.float64))
    ours, theirs = [t.label for t in reference.tags.tags], [t.label for t in other.tags.tags]
    return {"max_abs_score_diff": float(diff.max()), "same_tags": set(ours) == set(theirs),
            "same_order": ours == theirs, "only_reference": sorted(set(ours) - set(theirs)),
            "only_other": sorted(set(theirs) - set(ours)),
            "mask_agreement": mask_agreement(reference, other)}


def tags_cell(row: dict) -> str:
    """A deviation row's tag comparison for a Markdown table: yes, yes (other order), or no
    with the classes only one side tagged."""
    if row["same_tags"]:
        return "yes" if row["same_order"] else "yes (other order)"
    changes = [f"−{t}" for t in row["only_reference"]] + [f"+{t}" for t in row["only_other"]]
    return "no (" + ", ".join(changes) + ")"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def software() -> dict:
    """Versions that decide the kernels: torch, its CUDA and cuDNN, open_clip, Python."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}
