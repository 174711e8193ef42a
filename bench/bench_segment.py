"""Segmentation modes on the CPU: CLIP-ES (the paper's masks) vs the gradient-free DMAR mode.

    .venv/bin/python bench/bench_segment.py [--repeats 3] [--out bench/results/segment]

ViT-B/16 geometry with random weights rounded to float16 values, as OpenAI's released weights
are (speed does not depend on the values). For each sample image: TagCLIP's tags, then the
median time of `ClipEsSegmenter.segment` on its own, of the same after TagCLIP with the shared
trunk (what `Perception.run` does: blocks 1..11 are not run again), and of `dmar_segment`, and
the share of pixels on which the CLIP-ES and DMAR label masks agree. With random
weights the agreement says nothing about quality; with real weights it is the number to watch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import open_clip
import torch
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import TextFeatureCache, load_vocabulary, read_image  # noqa: E402
from tagclip_ros.core.image import image_files  # noqa: E402
from tagclip_ros.core.loading import from_model  # noqa: E402
from tagclip_ros.core.pipeline import Perception  # noqa: E402
from tagclip_ros.core.segment import Trunk, dmar_segment  # noqa: E402
from tagclip_ros.core.settings import SegmentationSettings, TagClipSettings  # noqa: E402


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)  # OpenAI's network
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    loaded = from_model(model, weights_id="random-vit-b-16-fp16")
    # One template: image-side timings do not depend on how the text features were made.
    perception = Perception(loaded, load_vocabulary("voc"), TagClipSettings(templates="single"),
                            SegmentationSettings(), TextFeatureCache(loaded, None))
    rows = []
    for path in tqdm(image_files(os.path.join(REPO, "samples")), desc="images", unit="img"):
        rgb = read_image(path)
        recorder = perception.segmenter.trunk_recorder()
        result = perception.tagger.classify(rgb, recorder)
        tags = [t.index for t in result.tags]
        trunk = Trunk(result.last_block_input, recorder)
        clipes_s, clipes = median_seconds(lambda: perception.segmenter.segment(rgb, tags), repeats)
        shared_s, _ = median_seconds(lambda: perception.segmenter.segment(rgb, tags, trunk), repeats)
        dmar_s, dmar = median_seconds(lambda: dmar_segment(result, rgb.shape[:2]), repeats)
        rows.append({"image": os.path.basename(path), "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
                     "tags": len(tags), "clipes_ms": 1000 * clipes_s,
                     "clipes_shared_ms": 1000 * shared_s, "dmar_ms": 1000 * dmar_s,
                     "agreement": float(np.mean(clipes.mask == dmar.mask))})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| image | size | tags | CLIP-ES alone | CLIP-ES after TagCLIP (shared trunk) | "
             "DMAR mode | DMAR vs alone | mask agreement |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image']} | {r['size']} | {r['tags']} | {r['clipes_ms']:.0f} ms | "
                     f"{r['clipes_shared_ms']:.0f} ms | "
                     f"{r['dmar_ms']:.1f} ms | {r['clipes_ms'] / r['dmar_ms']:.0f}× | "
                     f"{100 * r['agreement']:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "segment"))
    args = parser.parse_args()
    rows = run(args.repeats)
    table = markdown(rows)
    print(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"threads": torch.get_num_threads(), "rows": rows}, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
