"""scripts/gpu_check.sh on a bare machine like the GPU machine, proven on the CPU: a Python with
torch and the numeric stack but without open_clip, ftfy, wcwidth or ROS, the wheels that
scripts/fetch_wheels.sh downloads, and the fixtures given by --fixtures. The check runs its four
steps on the CPU (TAGCLIP_GPU_CHECK_DEVICE=cpu, which only this test sets) and must leave the
logs, the results and summary.md, and touch nothing of that Python."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

from tagclip_ros.core.doctor import NEEDED_MODULES

from .conftest import FIXTURES, REPO

# What the GPU machine has (requirements/gpu_check.txt names what it lacks), and pip.
BARE_DISTRIBUTIONS = [d for d in NEEDED_MODULES if d not in ("open_clip_torch", "ftfy", "wcwidth")] + ["pip"]
LACKING = ("open_clip", "ftfy", "wcwidth", "rclpy")
OUT_FILES = {"doctor.log", "tests.log", "tests.xml", "bench_gpu.log", "bench_gpu.json",
             "precision.log", "precision.json", "summary.md"}


def requirement_names(dist: importlib.metadata.Distribution) -> list[str]:
    """The distributions `dist` needs, extras left out."""
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement.replace('"', "").replace("'", ""):
            continue
        names.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return names


def closure(names: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions `names` need, transitively."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        key = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if key in found:
            continue
        try:
            found[key] = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency for another platform or Python
        todo += requirement_names(found[key])
    return found


def bare_python(folder) -> str:
    """A venv whose site-packages links exactly the closure of BARE_DISTRIBUTIONS from this
    Python's (no copy of torch), and so has no open_clip, ftfy, wcwidth or ROS."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = os.path.join(folder, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    for dist in closure(BARE_DISTRIBUTIONS).values():
        tops = {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__", "bin"}:
            source = dist.locate_file(top)
            if os.path.exists(source) and not os.path.exists(os.path.join(site, top)):
                os.symlink(source, os.path.join(site, top))
    return python


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("gpu-check")
    python = bare_python(folder / "python")
    wheels = folder / "wheels"
    fetched = subprocess.run([os.path.join(REPO, "scripts", "fetch_wheels.sh"), str(wheels), "--python",
                              f"{sys.version_info.major}.{sys.version_info.minor}"],
                             capture_output=True, text=True, timeout=600)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    return {"python": python, "wheels": str(wheels), "folder": folder}


def gpu_check(bare: dict, out, *options: str, device: str | None = "cpu") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TAGCLIP_FIXTURES")}
    env.update(PYTHON=bare["python"], TMPDIR=str(bare["folder"]))
    if device:
        env["TAGCLIP_GPU_CHECK_DEVICE"] = device
    return subprocess.run([os.path.join(REPO, "scripts", "gpu_check.sh"), str(out), *options],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


def test_the_bare_python_lacks_what_the_gpu_machine_lacks(bare):
    done = subprocess.run([bare["python"], "-c", "import importlib.util as u, sys; "
                           f"sys.exit(any(u.find_spec(m) for m in {LACKING!r}) or not u.find_spec('torch'))"])
    assert done.returncode == 0
    assert {w.split("-")[0] for w in os.listdir(bare["wheels"])} == {"open_clip_torch", "ftfy", "wcwidth"}


def test_doctor_names_what_the_gpu_check_needs_and_other_verbs_say_so(bare):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = REPO
    doctor = subprocess.run([bare["python"], "-m", "tagclip_ros.cli", "doctor"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "packages     missing open_clip_torch, ftfy, wcwidth" in doctor.stdout
    assert "scripts/fetch_wheels.sh DIR" in doctor.stdout and "Traceback" not in doctor.stderr
    classify = subprocess.run([bare["python"], "-m", "tagclip_ros.cli", "classify", "x.jpg"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300)
    assert classify.returncode == 2 and classify.stderr.count("\n") == 1, classify.stderr
    assert "tagclip classify needs the Python module 'open_clip'" in classify.stderr


def test_without_the_wheels_it_names_what_is_missing_in_one_sentence(bare, tmp_path):
    done = gpu_check(bare, tmp_path / "out", "--fixtures", FIXTURES)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "open_clip_torch, ftfy, wcwidth" in done.stderr
    assert "scripts/fetch_wheels.sh" in done.stderr and "Traceback" not in done.stderr


def test_without_a_gpu_it_says_so_in_one_sentence(bare, tmp_path):
    done = gpu_check(bare, tmp_path / "out", "--wheels", bare["wheels"], "--fixtures", FIXTURES, device=None)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().startswith("gpu_check: no usable CUDA device")
    assert done.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "out")


def test_quick_cpu_run_leaves_logs_results_and_summary(bare, tmp_path, text_cache_dir):
    out = tmp_path / "out"
    done = gpu_check(bare, out, "--wheels", bare["wheels"], "--fixtures", FIXTURES, "--quick",
                     "--text-cache", text_cache_dir)  # the session's: the tiny model's features
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert set(os.listdir(out)) == OUT_FILES
    for step in range(1, 5):
        assert f"step {step}/4" in done.stdout  # progress as it goes
    summary = (out / "summary.md").read_text()
    for heading in ("## Goals", "## Steps", "## Tests", "## Benchmark",
                    "## Precision on the reference fixtures"):
        assert heading in summary
    assert "node not measured: no ROS 2 here" in summary
    assert re.search(r"\| fp32 \| 320×240 \| tags \|", summary)  # the per-stage table
    assert "Several cameras, one model (fp32, 320×240 frames" in summary  # the cameras table
    for cameras in range(1, 5):  # frames/s batched, one at a time, their ratio, Δ score, same tags
        assert re.search(rf"\| {cameras} \| \*\*[\d.]+\*\* \| [\d.]+ \| [\d.]+ \| [\d.e+-]+ \| yes \|",
                         summary)
    assert "| bf16 | voc |" in summary  # the precision table
    assert summary.count("| ok |") == 4  # every step ran
    assert "test_fp32_on_cuda_reproduces_the_official_scores[voc] | skipped" in summary
    assert all(os.path.getsize(out / name) < 16 * 2 ** 20 for name in OUT_FILES)
    assert not [p for p in os.listdir(bare["folder"]) if p.startswith("tagclip-gpu-check.")]  # cleaned


def test_help_documents_every_step():
    done = subprocess.run([os.path.join(REPO, "scripts", "gpu_check.sh"), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    for step in ("doctor --json", "test/core/test_cuda.py", "bench/bench_gpu.py", "bench_precision.py",
                 "summary.md", "--wheels", "--fixtures", "--quick", "no ROS 2 here"):
        assert step in done.stdout
