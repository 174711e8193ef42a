"""`tagclip doctor`'s facts (core/doctor.py): the report of this machine agrees with torch and
open_clip; GPU signs are read from a file system laid out like a Jetson's; CPU bfloat16 flags
from cpuinfo files; and each way torch can miss a GPU it should use is one problem sentence.

The variants of torch's build that this machine does not have (CPU-only torch, a GPU torch
cannot reach) are this machine's real report with those facts replaced; torch or open_clip
missing is a real `gather()` with the module made unimportable.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import re
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from tagclip_ros.core.device import PRECISIONS, resolve_precision
from tagclip_ros.core.doctor import (CudaDevice, Report, cpu_bf16_native, find_problems, gather,
                                     gpu_presence, runnable_precisions)

from ..conftest import REPO

JETSON_MODEL = "NVIDIA Jetson AGX Orin"
L4T_RELEASE = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64"
X86_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep avx2 avx512f avx512bw avx512_vnni"
ARM_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's torch uses CUDA")


def make_jetson_root(root: Path) -> Path:
    """A file system root with what a Jetson AGX Orin has: the L4T release file, a Tegra GPU
    device file and the device-tree model (NUL-terminated, as the kernel writes it)."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(L4T_RELEASE + "\n")
    (root / "dev").mkdir()
    (root / "dev" / "nvhost-ctrl-gpu").touch()
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(JETSON_MODEL.encode() + b"\0")
    return root


def one_sentence(text: str) -> bool:
    """A single sentence: ends with a full stop, and no other ends inside it."""
    return text.endswith(".") and len(re.findall(r"[.!?](\s|$)", text)) == 1


@pytest.fixture(scope="module")
def report() -> Report:
    return gather()


def test_report_of_this_machine_agrees_with_torch_and_open_clip(report):
    assert report.python == platform.python_version() and report.machine == platform.machine()
    assert report.torch_version == torch.__version__ and report.torch_cuda == torch.version.cuda
    assert report.cuda_available == torch.cuda.is_available()
    assert len(report.cuda_devices) == (torch.cuda.device_count() if report.cuda_available else 0)
    assert report.open_clip_version == open_clip.__version__
    assert report.network == "ViT-B/16 (width 768, 12 blocks, 12 heads, 224 px, QuickGELU)"
    assert report.precisions["cpu"] == ["fp32", "bf16"]
    assert set(report.precisions) == {"cpu"} | {f"cuda:{d.index}" for d in report.cuda_devices}
    # a GPU in the file system that torch cannot use would be a problem: here there is none
    assert report.problems == [] and (report.cuda_available or not report.gpu.present)


def test_report_is_json_data(report):
    data = report.to_dict()
    assert data["torch_version"] == torch.__version__ and data["gpu"]["present"] is report.gpu.present
    assert data["problems"] == report.problems and isinstance(data["cuda_devices"], list)


@no_cuda
def test_jetson_whose_torch_cannot_use_the_gpu_is_a_problem(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        jetson = gather(str(make_jetson_root(tmp_path)))
    assert jetson.gpu.tegra and jetson.gpu.present and jetson.gpu.model == JETSON_MODEL
    assert jetson.gpu.device_files == ["/dev/nvhost-ctrl-gpu"] and jetson.gpu.tegra_release == L4T_RELEASE
    [problem] = jetson.problems
    assert JETSON_MODEL in problem and "cannot use it" in problem and 'docs/jetson.md' in problem
    assert one_sentence(problem)
    # open_clip's "No pretrained weights loaded" warning (root logger) is silenced, and only then
    assert not caplog.records and logging.root.manager.disable == logging.NOTSET
    assert jetson.cpu_bf16_native is None  # the fake root has no proc/cpuinfo


def test_device_files_are_the_nvidia_ones(tmp_path):
    (tmp_path / "dev").mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvhost-gpu", "null", "sda"):
        (tmp_path / "dev" / name).touch()
    gpu = gpu_presence(str(tmp_path))
    assert gpu.device_files == ["/dev/nvhost-gpu", "/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl"]
    assert gpu.present and not gpu.tegra and gpu.model is None


@pytest.mark.parametrize("model, tegra", [(JETSON_MODEL, True), ("Raspberry Pi 4 Model B Rev 1.4", False)])
def test_tegra_is_recognised_by_the_device_tree_model_alone(tmp_path, model, tegra):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    gpu = gpu_presence(str(tmp_path))
    assert (gpu.tegra, gpu.present, gpu.model, gpu.tegra_release) == (tegra, tegra, model, None)


def test_empty_root_has_no_gpu(tmp_path):
    gpu = gpu_presence(str(tmp_path))
    assert (gpu.device_files, gpu.tegra, gpu.present) == ([], False, False)


@pytest.mark.parametrize("machine, line, native", [
    ("x86_64", f"flags\t\t: {X86_FLAGS} avx512_bf16 gfni", True),
    ("x86_64", f"flags\t\t: {X86_FLAGS} amx_bf16 amx_tile", True),
    ("x86_64", f"flags\t\t: {X86_FLAGS} avx512_fp16", False),
    ("aarch64", f"Features\t: {ARM_FEATURES} bf16 i8mm", True),
    ("aarch64", f"Features\t: {ARM_FEATURES} svebf16", False),
    ("riscv64", f"flags\t\t: {X86_FLAGS} avx512_bf16", None),  # a machine it cannot judge
])
def test_cpu_bf16_flag_is_read_from_cpuinfo(tmp_path, machine, line, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\n{line}\n\nprocessor\t: 1\n{line}\n")
    assert cpu_bf16_native(str(cpuinfo), machine) is native


def test_unreadable_cpuinfo_is_unknown(tmp_path):
    assert cpu_bf16_native(str(tmp_path / "missing"), "x86_64") is None


def cuda(index: int, capability: tuple[int, int], bf16: bool) -> CudaDevice:
    return CudaDevice(index=index, name=f"GPU {index}", capability=capability,
                      total_memory=8 << 30, fp16=capability >= (5, 3), bf16=bf16)


def test_precisions_follow_each_device():
    """bf16 that torch only emulates (capability 7.5) is not offered: the package refuses it."""
    devices = [cuda(0, (5, 2), False), cuda(1, (7, 5), True), cuda(2, (8, 7), True)]
    assert runnable_precisions(devices) == {
        "cpu": ["fp32", "bf16"], "cuda:0": ["fp32"], "cuda:1": ["fp32", "fp16"],
        "cuda:2": ["fp32", "fp16", "bf16"]}


def test_cpu_precisions_are_what_the_core_accepts():
    accepted = []
    for name in PRECISIONS:
        try:
            resolve_precision(name, torch.device("cpu"))
            accepted.append(name)
        except ValueError:
            pass
    assert runnable_precisions([])["cpu"] == accepted


def on_gpu_machine(report: Report, root: Path, **facts) -> Report:
    """This machine's report with the GPU signs of `root` and torch facts replaced."""
    return dataclasses.replace(report, gpu=gpu_presence(str(root)), problems=[], **facts)


def nvidia_root(root: Path) -> Path:
    """A desktop/server root: /dev/nvidia0 and /dev/nvidiactl."""
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "nvidia0").touch()
    (root / "dev" / "nvidiactl").touch()
    return root


@pytest.mark.parametrize("layout, words", [
    (make_jetson_root, [JETSON_MODEL, "CPU-only build", "replaced the CUDA one", 'docs/jetson.md']),
    (nvidia_root, ["an NVIDIA GPU", "CPU-only build", "install a CUDA build of torch"]),
])
def test_cpu_only_torch_beside_a_gpu_says_how_to_get_a_cuda_one(report, tmp_path, layout, words):
    machine = on_gpu_machine(report, layout(tmp_path), torch_cuda=None, cuda_available=False)
    [problem] = find_problems(machine)
    assert all(word in problem for word in words), problem
    assert one_sentence(problem)


def test_cuda_torch_that_cannot_reach_the_gpu_blames_the_driver(report, tmp_path):
    machine = on_gpu_machine(report, nvidia_root(tmp_path), torch_cuda="12.8", cuda_available=False)
    [problem] = find_problems(machine)
    assert "CUDA 12.8" in problem and "driver or CUDA runtime is not usable" in problem
    assert "nvidia-smi" in problem and one_sentence(problem)


def test_gpu_that_torch_uses_is_no_problem(report, tmp_path):
    device = cuda(0, (8, 7), True)
    machine = on_gpu_machine(report, make_jetson_root(tmp_path), torch_cuda="12.6",
                             cuda_available=True, cuda_devices=[device])
    assert find_problems(machine) == []


def test_missing_open_clip_is_named_with_both_ways_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now fails
    broken = gather()
    assert broken.open_clip_version is None and "open_clip" in broken.open_clip_error
    assert broken.network is None and broken.missing_packages == ["open_clip_torch"]
    [problem] = [p for p in broken.problems if "open_clip" in p]
    assert problem.startswith("Missing Python packages: open_clip_torch:")
    assert "requirements/core.txt" in problem and "scripts/fetch_wheels.sh" in problem
    assert "scripts/gpu_check.sh" in problem and one_sentence(problem)


def test_open_clip_installed_but_failing_to_import_is_a_problem(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    monkeypatch.setattr("tagclip_ros.core.doctor.missing_packages", lambda: [])  # installed, broken
    [problem] = [p for p in gather().problems if "open_clip" in p]
    assert problem.startswith("open_clip is not importable") and "requirements/core.txt" in problem
    assert one_sentence(problem)


def test_torch_not_importable_is_a_problem(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    broken = gather()
    assert broken.torch_version is None and broken.precisions == {} and not broken.cuda_available
    problem = broken.problems[0]
    assert problem.startswith("torch is not importable") and "requirements/torch.txt" in problem
    assert 'docs/jetson.md' in problem and one_sentence(problem)


def test_doctor_core_does_not_import_rclpy():
    code = "import sys, tagclip_ros.core.doctor; print('rclpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
