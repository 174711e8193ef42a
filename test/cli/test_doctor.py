"""`tagclip doctor` as a user runs it: a separate process, its report and exit code, on this
machine and with `--root` pointed at a file system laid out like a Jetson's."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import open_clip
import pytest
import torch

from tagclip_ros.cli.doctor import human_lines
from tagclip_ros.core.doctor import CudaDevice, gather, runnable_precisions

from ..core.test_doctor import JETSON_MODEL, make_jetson_root, no_cuda
from .helpers import run_in_process


def run_doctor(*args: str) -> subprocess.CompletedProcess:
    """`python -m tagclip_ros.cli doctor ARGS` as a separate process (doctor has no cache)."""
    command = [sys.executable, "-m", "tagclip_ros.cli", "doctor", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_report_of_this_machine_names_versions_and_activation():
    done = run_doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    assert torch.__version__ in done.stdout and open_clip.__version__ in done.stdout
    assert "QuickGELU" in done.stdout and "ViT-B/16" in done.stdout
    assert f"CUDA usable  {'yes' if torch.cuda.is_available() else 'no'}" in done.stdout
    assert "precisions   cpu: fp32, bf16" in done.stdout and "problems     none" in done.stdout
    # open_clip's "No pretrained weights loaded" warning is not shown
    assert "pretrained" not in done.stderr and "Traceback" not in done.stderr


@no_cuda
def test_jetson_whose_torch_cannot_use_the_gpu_exits_1(tmp_path):
    done = run_doctor("--root", str(make_jetson_root(tmp_path)))
    assert done.returncode == 1, done.stdout + done.stderr
    [problem] = [line for line in done.stdout.splitlines() if line.startswith("problem ")]
    assert JETSON_MODEL in problem and "cannot use it" in problem and 'docs/jetson.md' in problem
    assert "Traceback" not in done.stderr


def test_json_holds_the_report(capsys):
    code, out, _ = run_in_process("doctor", "--json", capsys=capsys)
    assert code == 0
    report = json.loads(out)
    assert report["torch_version"] == torch.__version__ and report["torch_cuda"] == torch.version.cuda
    assert report["cuda_available"] is torch.cuda.is_available()
    assert len(report["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert report["open_clip_version"] == open_clip.__version__ and "QuickGELU" in report["network"]
    assert report["precisions"]["cpu"] == ["fp32", "bf16"] and report["problems"] == []
    assert {"python", "machine", "cudnn", "cpu_bf16_native", "gpu"} <= report.keys()
    assert {"device_files", "tegra", "model", "present"} <= report["gpu"].keys()


@no_cuda
def test_json_of_a_jetson_holds_the_problem(tmp_path, capsys):
    code, out, _ = run_in_process("doctor", "--json", "--root", str(make_jetson_root(tmp_path)),
                                  capsys=capsys)
    report = json.loads(out)
    assert code == 1 and len(report["problems"]) == 1
    assert report["gpu"] == {"device_files": ["/dev/nvhost-ctrl-gpu"], "tegra": True,
                             "model": JETSON_MODEL, "tegra_release": report["gpu"]["tegra_release"],
                             "present": True}
    assert report["gpu"]["tegra_release"].startswith("# R36")


def test_root_must_be_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_in_process("doctor", "--root", str(tmp_path / "missing"), capsys=capsys)
    assert exit_info.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_human_report_of_gpus_says_what_each_runs():
    """The lines for CUDA devices (this machine may have none): an Orin and a Turing GPU, whose
    bf16 torch only emulates."""
    devices = [CudaDevice(0, "Orin", (8, 7), 30 << 30, fp16=True, bf16=True),
               CudaDevice(1, "Tesla T4", (7, 5), 15 << 30, fp16=True, bf16=True)]
    report = dataclasses.replace(gather(), cuda_available=True, cuda_devices=devices,
                                 precisions=runnable_precisions(devices))
    lines = human_lines(report)
    assert "CUDA usable  yes" in lines
    assert "cuda:0       Orin, compute 8.7, 30.0 GiB, fp16 yes, bf16 yes" in lines
    assert "cuda:1       Tesla T4, compute 7.5, 15.0 GiB, fp16 yes, bf16 emulated only (not used)" in lines
    assert "             cuda:0: fp32, fp16, bf16" in lines and "             cuda:1: fp32, fp16" in lines
