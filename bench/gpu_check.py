"""The GPU check in one call: doctor, the CUDA tests, the GPU benchmark and the precision table,
each with its own log in OUTDIR, then OUTDIR/summary.md with every figure and goal.

    scripts/gpu_check.sh OUTDIR [--wheels DIR] [--fixtures DIR] [--quick]

(the script installs the wheels into a private folder, points the tests at the fixtures, then
runs this file with the same Python). Steps, each with a time limit so that one slow step
cannot eat the others' time:

1. `tagclip doctor --json`                         → doctor.log
2. `pytest test/core/test_cuda.py` (and test/node/test_cuda_node.py where rclpy imports), with
   TAGCLIP_REQUIRE_CUDA=1 so that nothing is skipped for want of a GPU → tests.log, tests.xml
3. `bench/bench_gpu.py` (per-stage rows, frames/s summed over 1-4 cameras batched and one at a
   time, and the node part only where rclpy imports)             → bench_gpu.log, bench_gpu.json
4. `bench/bench_precision.py --device cuda`       → precision.log, precision.json

OUTDIR ends with those 7 files and summary.md. Exit status: 0 when every step ran and every goal
that was measured passed; 1 otherwise; 3, with one sentence, when there is no usable CUDA device
or a needed package is missing. TAGCLIP_GPU_CHECK_DEVICE=cpu (used by test/test_gpu_check.py
only) runs the same steps on the CPU, small, with the tiny fixture checkpoint, to prove them.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fixture_paths import FIXTURES, WEIGHTS  # noqa: E402
from tagclip_ros.core.doctor import WHEELS_HINT, missing_packages  # noqa: E402

EXIT_FAILED, EXIT_UNUSABLE = 1, 3
FP32_TEST = "test_fp32_on_cuda_reproduces_the_official_scores"
# (quick?) → seconds each step may take; the whole check must end within 6 min (quick: 2 min).
LIMITS_S = {False: {"doctor": 45, "tests": 120, "bench_gpu": 150, "precision": 60},
            True: {"doctor": 20, "tests": 40, "bench_gpu": 40, "precision": 20}}
CPU_LIMIT_S = 600  # the CPU proof: a 2-core build machine, busy
# The CPU proof's benchmark: the tiny fixture checkpoint, one small frame (the cameras' too),
# one run per row.
CPU_BENCH_ARGS = ["--weights", WEIGHTS, "--sizes", "320x240", "--camera-size", "320x240",
                  "--precisions", "fp32,bf16", "--warmup", "0", "--repeats", "1"]
CPU_PRECISION_ARGS = ["--vocabularies", "voc", "--images", "2"]


@dataclass
class Step:
    """One command of the check, its log and what it produced."""

    name: str
    title: str
    command: list[str]
    limit_s: float
    env: dict[str, str] = field(default_factory=dict)
    results: str | None = None  # a JSON file the command writes, copied into OUTDIR
    returncode: int | None = None
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def status(self) -> str:
        if self.timed_out:
            return f"timed out after {self.limit_s:.0f} s"
        return "ok" if self.returncode == 0 else f"exit {self.returncode}"


def rclpy_importable() -> bool:
    return importlib.util.find_spec("rclpy") is not None


def plan_steps(device: str, quick: bool, out: str, work: str, text_cache: str) -> list[Step]:
    """The four steps for `device` ("cuda" or the CPU proof's "cpu"); the benchmarks share
    `text_cache`."""
    py = sys.executable
    limits = LIMITS_S[quick] if device == "cuda" else dict.fromkeys(LIMITS_S[quick], CPU_LIMIT_S)
    tests = ["test/core/test_cuda.py"] + (["test/node/test_cuda_node.py"] if rclpy_importable() else [])
    bench = [py, "bench/bench_gpu.py", "--device", device, "--out", os.path.join(work, "gpu.json"),
             "--cache-dir", text_cache]
    bench += ["--quick"] if quick else []
    bench += CPU_BENCH_ARGS if device == "cpu" else []
    return [
        Step("doctor", "tagclip doctor --json", [py, "-m", "tagclip_ros.cli", "doctor", "--json"],
             limits["doctor"]),
        Step("tests", "CUDA tests: " + " ".join(tests),
             [py, "-m", "pytest", *tests, "-v", "-s", "-p", "no:cacheprovider",
              f"--junitxml={os.path.join(out, 'tests.xml')}"], limits["tests"],
             env={"TAGCLIP_REQUIRE_CUDA": "1"} if device == "cuda" else {}),
        Step("bench_gpu", "GPU benchmark (bench/bench_gpu.py)", bench, limits["bench_gpu"],
             results=os.path.join(work, "gpu.json")),
        Step("precision", "precision against fp32 (bench/bench_precision.py)",
             [py, "bench/bench_precision.py", "--device", device,
              "--out", os.path.join(work, "precision"), "--cache-dir", text_cache]
             + (CPU_PRECISION_ARGS if device == "cpu" else []), limits["precision"],
             results=os.path.join(work, "precision.json")),
    ]


def run_step(step: Step, out: str, number: int, total: int) -> None:
    """Run one step, its output streamed to the console and to OUTDIR/<name>.log; killed (its
    whole process group) when it outlives its limit."""
    print(f"[gpu_check] step {number}/{total}: {step.title} (limit {step.limit_s:.0f} s)", flush=True)
    start = time.perf_counter()
    with open(os.path.join(out, f"{step.name}.log"), "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(step.command) + "\n")
        log.flush()
        process = subprocess.Popen(step.command, cwd=REPO, env={**os.environ, **step.env},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        watchdog = threading.Timer(step.limit_s, kill_group, (process, step))
        watchdog.start()
        for line in process.stdout:
            log.write(line)
            sys.stdout.write(line)
        step.returncode = process.wait()
        watchdog.cancel()
        if step.timed_out:
            log.write(f"\n[gpu_check] killed: over its limit of {step.limit_s:.0f} s\n")
    sys.stdout.flush()
    step.seconds = time.perf_counter() - start
    if step.results and os.path.isfile(step.results):
        shutil.copy(step.results, os.path.join(out, f"{step.name}.json"))
    print(f"[gpu_check] step {number}/{total}: {step.status()} in {step.seconds:.0f} s", flush=True)


def kill_group(process: subprocess.Popen, step: Step) -> None:
    """The watchdog: end a step that outlived its limit, children included."""
    step.timed_out = True
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def doctor_report(out: str) -> dict | None:
    """The JSON that `tagclip doctor --json` printed into doctor.log (after the command line)."""
    try:
        with open(os.path.join(out, "doctor.log"), encoding="utf-8") as f:
            text = f.read()
        return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
    except (OSError, ValueError):
        return None


def test_cases(xml_path: str) -> list[dict]:
    """Each test of the JUnit XML: name, outcome (passed/failed/error/skipped), seconds, message."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return []
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (child.get("message") or "").strip().splitlines()[0:1]
                message = message[0][:200] if message else ""
                break
        cases.append({"name": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}",
                      "outcome": outcome, "seconds": float(case.get("time") or 0), "message": message})
    return cases


def driver_version() -> str | None:
    """The NVIDIA driver's version, from nvidia-smi where it is installed."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def goal_rows(bench: dict | None, cases: list[dict], device: str) -> list[tuple[str, str, str]]:
    """(goal, figure, verdict) for the issue's goals: speed and node from the benchmark, fp32
    fidelity and the CUDA tests from the test run."""
    rows = []
    for goal in (bench or {}).get("goals", []):
        value = "not measured" if goal["value"] is None else f"{goal['value']:.1f} {goal['unit']}"
        if goal["value"] is None and "node" in goal["goal"]:
            value = (bench or {}).get("node_note") or value
        verdict = "–" if goal["passed"] is None else "PASS" if goal["passed"] else "FAIL"
        rows.append((goal["goal"], value, verdict))
    if bench is None:
        rows.append(("speed and node goals", "the benchmark produced no results", "FAIL"))
    fp32 = [c for c in cases if FP32_TEST in c["name"]]
    verdict = ("–" if device != "cuda" else "FAIL" if not fp32 or any(c["outcome"] != "passed" for c in fp32)
               else "PASS")
    rows.append(("fp32 scores equal the official references to 1e-4 (VOC, COCO)",
                 ", ".join(f"{c['name'].split('[')[-1].rstrip(']')}: {c['outcome']}" for c in fp32)
                 or "not run", verdict))
    counts = {o: sum(c["outcome"] == o for c in cases) for o in ("passed", "failed", "error", "skipped")}
    bad = counts["failed"] + counts["error"] + (counts["skipped"] if device == "cuda" else 0)
    rows.append(("every CUDA test passes, none skipped",
                 ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no test ran",
                 "–" if device != "cuda" else "PASS" if cases and not bad else "FAIL"))
    return rows


def summary(steps: list[Step], out: str, work: str, device: str, quick: bool,
            wall_s: float) -> tuple[str, bool]:
    """summary.md's text, and whether everything passed."""
    doctor, bench = doctor_report(out), read_json(os.path.join(out, "bench_gpu.json"))
    cases = test_cases(os.path.join(out, "tests.xml"))
    goals = goal_rows(bench, cases, device)
    lines = [f"# GPU check, {time.strftime('%Y-%m-%d %H:%M')}{' (--quick)' if quick else ''}", ""]
    lines += machine_lines(doctor, bench, device) + [f"- wall time: {wall_s:.0f} s", ""]
    lines += ["## Goals", "", "| goal | figure | verdict |", "|---|---|---|"]
    lines += [f"| {g} | {v} | **{r}** |" for g, v, r in goals]
    lines += ["", "## Steps", "", "| step | status | seconds | log |", "|---|---|---|---|"]
    lines += [f"| {s.title} | {s.status()} | {s.seconds:.0f} | `{s.name}.log` |" for s in steps]
    lines += ["", "## Tests", "", "| test | outcome | seconds | message |", "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['outcome']} | {c['seconds']:.1f} | {c['message']} |" for c in cases]
    if not cases:
        lines.append("| (no JUnit report: see tests.log) | | | |")
    for step, stem, title in (("bench_gpu", "gpu", "Benchmark"),
                              ("precision", "precision", "Precision on the reference fixtures")):
        lines += ["", f"## {title}", "", bench_markdown(os.path.join(work, f"{stem}.md"), step)]
    passed = all(s.ok for s in steps) and all(r != "FAIL" for _, _, r in goals)
    return "\n".join(lines) + "\n", passed


def machine_lines(doctor: dict | None, bench: dict | None, device: str) -> list[str]:
    """GPU, driver, torch, CUDA and Python, from doctor's report and the benchmark."""
    if doctor is None:
        return ["- machine: doctor produced no report (doctor.log)"]
    gpus = [f"{d['name']} (compute {'.'.join(map(str, d['capability']))}, "
            f"{d['total_memory'] / 2 ** 30:.0f} GiB)" for d in doctor["cuda_devices"]]
    lines = [f"- device: {device}; GPU: {', '.join(gpus) or 'none usable'}; "
             f"driver {driver_version() or 'unknown'}",
             f"- torch {doctor['torch_version']} (CUDA {doctor['torch_cuda'] or 'none'}, cuDNN "
             f"{doctor['cudnn'] or 'none'}), torchvision {doctor['torchvision_version']}, open_clip "
             f"{doctor['open_clip_version']}, Python {doctor['python']} ({doctor['machine']})"]
    if doctor["problems"]:
        lines.append("- doctor's problems: " + " ".join(doctor["problems"]))
    rows = (bench or {}).get("rows", []) + ((bench or {}).get("cameras") or {}).get("rows", [])
    peaks = [r["peak_gpu_mb"] for r in rows if r.get("peak_gpu_mb") is not None]
    if peaks:
        lines.append(f"- peak GPU memory of the benchmark: {max(peaks):.0f} MB (per row and per "
                     "number of cameras below)")
    return lines


def bench_markdown(path: str, step: str) -> str:
    """The tables a benchmark wrote (its Markdown, beside its JSON in the work folder)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return f"No results: see `{step}.log`."


def usable_device() -> str:
    """'cuda', or the CPU proof's 'cpu'; exits with one sentence when CUDA is not usable."""
    if os.environ.get("TAGCLIP_GPU_CHECK_DEVICE") == "cpu":
        return "cpu"
    import torch
    if not torch.cuda.is_available():
        why = "is a CPU-only build" if torch.version.cuda is None else \
            f"(built for CUDA {torch.version.cuda}) sees no usable GPU"
        sys.exit(f"gpu_check: no usable CUDA device: torch {torch.__version__} {why}; run it on a "
                 "machine with an NVIDIA GPU and a CUDA-enabled torch (`tagclip doctor` says more).")
    return "cuda"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder for the logs, results and summary.md")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under 2 min on a GPU)")
    parser.add_argument("--text-cache", help="text-feature cache folder the benchmarks share "
                        "(default: a temporary one)")
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"gpu_check: missing Python packages: {', '.join(missing)}; {WHEELS_HINT}.", file=sys.stderr)
        return EXIT_UNUSABLE
    if not os.path.isfile(WEIGHTS):
        print(f"gpu_check: no reference fixtures at {FIXTURES} (pass --fixtures DIR, the folder "
              "holding reference/).", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        device = usable_device()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNUSABLE
    out = os.path.abspath(args.outdir)
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        steps = plan_steps(device, args.quick, out, work, args.text_cache or os.path.join(work, "text"))
        for number, step in enumerate(steps, 1):
            run_step(step, out, number, len(steps))
        text, passed = summary(steps, out, work, device, args.quick, time.perf_counter() - start)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"[gpu_check] {'PASS' if passed else 'FAIL'}: wrote {out}/summary.md and the logs "
          f"in {time.perf_counter() - start:.0f} s")
    return 0 if passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
