"""Reduced precision against float32 on the reference fixtures: the README's precision table.

    .venv/bin/python bench/bench_precision.py [--device cpu|cuda] [--out bench/results/precision]

Loads the reference checkpoint (../shared/fixtures/reference, or $TAGCLIP_FIXTURES/reference)
in float32 and in each reduced precision the device runs (the CPU: bf16; CUDA: fp16, and bf16
from compute capability 8.0), on the same device, and measures with core/deviation.py, per
dataset profile (VOC, COCO; --vocabularies, --images narrow it) over the five fixture images:
the largest score difference, how many images got the same tags, and the share of equal
label-mask pixels (CLIP-ES and DMAR masks) on images with the same tags.
"""
from __future__ import annotations

import argparse
import os
import sys

from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.core import load_model, read_image  # noqa: E402
from tagclip_ros.core.deviation import Deviation, measure  # noqa: E402
from tagclip_ros.core.device import resolve_device, resolve_precision  # noqa: E402
from tagclip_ros.core.dataset_profiles import resolve_profile  # noqa: E402
from fixture_paths import IMAGES, WEIGHTS  # noqa: E402
from results_io import save_results  # noqa: E402

VOCABULARIES = ("voc", "coco")
# Its CLIP-ES masks move on over half the pixels under 1e-6 weight noise (fixture README).
ILL_CONDITIONED = "night_1280x720.jpg"


def usable_precisions(device: str) -> list[str]:
    """The reduced precisions `device` runs (resolve_precision's rule)."""
    usable = []
    for precision in ("fp16", "bf16"):
        try:
            resolve_precision(precision, resolve_device(device))
            usable.append(precision)
        except ValueError:
            pass
    return usable


def run(device: str, cache_dir: str | None, vocabularies: list[str], limit: int | None = None) -> dict:
    names = sorted(os.listdir(IMAGES))[:limit]
    images = {name: read_image(os.path.join(IMAGES, name)) for name in names}
    reference = load_model(weights=WEIGHTS, device=device)
    rows = []
    jobs = [(p, v) for p in usable_precisions(device) for v in vocabularies]
    for precision, vocabulary in tqdm(jobs, desc="precision x vocabulary"):
        other = load_model(weights=WEIGHTS, device=device, precision=precision)
        deviation = measure(reference, other, resolve_profile(vocabulary), images, cache_dir)
        rows.append({"precision": precision, "vocabulary": vocabulary, **deviation.as_dict(),
                     "clipes": agreement(deviation, "clipes", [ILL_CONDITIONED]),
                     "dmar": agreement(deviation, "dmar")})
    return {"device": str(resolve_device(device)), "images": names, "rows": rows}


def agreement(deviation: Deviation, method: str, leave_out: list[str] = ()) -> str:
    """min / mean share of equal mask pixels over the images with the same tags."""
    if not deviation.agreements(method, leave_out):
        return "n/a (no image with the same tags)"
    return (f"{deviation.min_agreement(method, leave_out):.2%} / "
            f"{deviation.mean_agreement(method, leave_out):.2%}")


def markdown(results: dict) -> str:
    names = results["images"]
    lines = [f"Precision against float32 on {results['device']} (`bench/bench_precision.py`), "
             f"reference checkpoint, {len(names)} fixture images.", "",
             "| precision | vocabulary | max score diff | same tags | CLIP-ES mask pixels equal "
             "(min / mean) | DMAR mask pixels equal (min / mean) |", "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['precision']} | {row['vocabulary']} | {row['max_score_diff']:.1e} | "
                     f"{row['same_tags']}/{row['images']} | {row['clipes']} | {row['dmar']} |")
    if not results["rows"]:
        lines.append("| (none) | | this device runs float32 only | | | |")
    lines += ["", "Masks are compared on images that got the same tags (other tags give other "
              f"masks by construction); CLIP-ES's figures leave out `{ILL_CONDITIONED}`, whose "
              "CLIP-ES masks are ill-conditioned with these weights."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", help="results path without extension "
                        "(default bench/results/precision_<device type>)")
    parser.add_argument("--cache-dir", default=None, help="text-feature cache folder")
    parser.add_argument("--vocabularies", default=",".join(VOCABULARIES), help="default %(default)s")
    parser.add_argument("--images", type=int, help="only the first N fixture images (a smoke run)")
    args = parser.parse_args(argv)
    results = run(args.device, args.cache_dir, [v for v in args.vocabularies.split(",") if v], args.images)
    out = args.out or os.path.join(REPO, "bench", "results",
                                   f"precision_{resolve_device(args.device).type}")
    save_results(out, results, markdown(results))
    print(f"wrote {out}.json and {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
