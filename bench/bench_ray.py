"""Ray benchmark: `tagclip tag --ray` throughput, images/s for 1 and 2 workers on this machine's
CPU, beside the one-process run of the same images, in the same command.

    .venv/bin/python bench/bench_ray.py [--images 8] [--tiny] [--device cpu]
                                        [--out bench/results/ray_cpu]

Images: samples/ repeated to --images (under new names). Weights: ViT-B/16 with seeded random
weights (bench/stages.random_vit_b16, as bench_core builds them; speed does not depend on the
values), saved to a temporary file that the workers load; --tiny uses the reference tiny
checkpoint instead (../shared/fixtures: a quick check of the plumbing, not a speed figure).
Every configuration runs the verb's own code (tag.tag_images in this process, ray_jobs'
RayPool with the `tag` workers on a local Ray cluster of this machine's CPUs), after loading
and one warm-up image each, so images/s is the steady rate; the start-up (workers loading the
model) is reported beside it. Rows:
- one process (torch's default threads);
- Ray, 1 worker and 2 workers, each worker with one process's threads (the default: outputs
  byte-identical to the one-process run's; checked here, `identical`);
- Ray, 2 workers with 1 thread each (--threads-per-worker 1; cores not shared by threads).
The text features are encoded once, before timing (the default cache folder, kept between
runs). This process and the workers wait for OpenMP threads passively (OMP_WAIT_POLICY=PASSIVE
unless set, docs/ray.md), so the rows differ by distribution alone.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

# The wait policy the workers get (ray_jobs.worker_environment), here too and before torch
# loads OpenMP, so that the one-process row differs from the workers' by distribution alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tagclip_ros.cli import build_parser  # noqa: E402
from tagclip_ros.cli.common import build_classifier  # noqa: E402
from tagclip_ros.cli.ray_jobs import RayPool, import_ray  # noqa: E402
from tagclip_ros.cli.tag import tag_ids  # noqa: E402
from tagclip_ros.core import default_cache_dir, read_image  # noqa: E402
from tagclip_ros.core.image import image_files  # noqa: E402
from fixture_paths import WEIGHTS as TINY_WEIGHTS  # noqa: E402
from results_io import save_results  # noqa: E402
from stages import random_vit_b16  # noqa: E402


def image_set(folder: str, count: int) -> list[str]:
    """`count` images: samples/ repeated, as links named <sample>_<k>.jpg in `folder`."""
    samples = image_files(os.path.join(REPO, "samples"))
    paths = []
    for k in range(count):
        source = samples[k % len(samples)]
        path = os.path.join(folder, f"{k:03d}_{os.path.basename(source)}")
        os.symlink(source, path)
        paths.append(path)
    return paths


def tag_arguments(images: list[str], weights: str, device: str, cache: str, extra: list[str]):
    return build_parser().parse_args(["tag", *images, "--out", os.devnull, "--weights", weights,
                                      "--device", device, "--cache-dir", cache, *extra])


def one_process(args, paths: list[str]) -> dict:
    start = time.perf_counter()
    classifier = build_classifier(args)
    classifier.classify(read_image(paths[0]))  # warm-up
    loaded = time.perf_counter() - start
    results, start = {}, time.perf_counter()
    for path in paths:
        result = classifier.classify(read_image(path))
        results[path] = (tag_ids(result), list(map(float, result.scores)))
    return {"seconds": time.perf_counter() - start, "startup_s": loaded, "results": results}


def on_ray(args, paths: list[str]) -> dict:
    start = time.perf_counter()
    with RayPool("tag", args) as pool:
        pool.ray.get([actor.tag.remote(paths[0]) for actor in pool.actors])  # warm-up, each
        loaded = time.perf_counter() - start
        results, start = {}, time.perf_counter()
        for index, (_, ids, scores, _) in pool.map("tag", [(p,) for p in paths], "tag"):
            results[paths[index]] = (ids, list(map(float, scores)))
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "startup_s": loaded, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="the reference tiny checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--out", default=None, help="results path without extension "
                        "(default bench/results/ray_<device>[_tiny])")
    options = parser.parse_args()
    name = f"ray_{options.device.split(':')[0]}{'_tiny' if options.tiny else ''}"
    out = options.out or os.path.join(REPO, "bench", "results", name)
    ray = import_ray()
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as work:
        paths = image_set(work, options.images)
        if options.tiny:
            weights = TINY_WEIGHTS
        else:
            weights = os.path.join(work, "vit_b16_random_seed0.pt")
            torch.save(random_vit_b16(0).state_dict(), weights)
        cache = default_cache_dir()  # the vocabulary's features are encoded on the first run only
        gpus = ["--gpus-per-worker", str(options.gpus_per_worker)] if options.gpus_per_worker else []
        base = tag_arguments(paths, weights, options.device, cache, [])
        build_classifier(base)  # encodes the vocabulary's text features into the cache
        configurations = [
            ("one process", {}, lambda: one_process(base, paths)),
            ("Ray, 1 worker", {"workers": 1}, None),
            ("Ray, 2 workers", {"workers": 2}, None),
            ("Ray, 2 workers x 1 thread", {"workers": 2, "threads": 1}, None),
            ("one process, again (load check)", {}, lambda: one_process(base, paths)),
        ]
        rows = []
        for name, setting, run in configurations:
            if run is None and not ray.is_initialized():  # after the first one-process run
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
            if run is None:
                extra = ["--ray", "--workers", str(setting["workers"]), *gpus]
                if "threads" in setting:
                    extra += ["--threads-per-worker", str(setting["threads"])]
                args = tag_arguments(paths, weights, options.device, cache, extra)
                measured = on_ray(args, paths)
            else:
                measured = run()
            rows.append({"configuration": name, **setting, "seconds": measured["seconds"],
                         "startup_s": measured["startup_s"],
                         "images_per_s": len(paths) / measured["seconds"],
                         "results": measured["results"]})
            print(f"{name}: {rows[-1]['images_per_s']:.3f} images/s", flush=True)
        ray.shutdown()
    reference = rows[0]
    command = f"bench/bench_ray.py --images {options.images}{' --tiny' if options.tiny else ''}"
    weights_name = "tiny reference checkpoint" if options.tiny else "ViT-B/16 random weights"
    lines = [f"`{command}` on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
             f"device {options.device}, {weights_name}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
             f"torch threads per process {torch.get_num_threads()}",
             "",
             "| configuration | images/s | × one process | start-up (s) | outputs identical to one process |",
             "|---|---|---|---|---|"]
    figures = []
    for row in rows:
        identical = row["results"] == reference["results"]
        ratio = row["images_per_s"] / reference["images_per_s"]
        lines.append(f"| {row['configuration']} | {row['images_per_s']:.3f} | {ratio:.2f} | "
                     f"{row['startup_s']:.1f} | {'yes' if identical else 'no (last bits)'} |")
        figures.append({k: v for k, v in row.items() if k != "results"}
                       | {"ratio": ratio, "identical": identical})
    save_results(out, {"images": options.images, "device": options.device, "tiny": options.tiny,
                       "cpus": os.cpu_count(), "rows": figures}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
