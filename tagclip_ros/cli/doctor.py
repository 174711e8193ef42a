"""`tagclip doctor`: say whether this machine can run TagCLIP, on which devices and precisions,
and whether torch can use the NVIDIA GPU it has (exit 1 with what to do when not)."""
from __future__ import annotations

import argparse
import json
import os

from ..core.doctor import DEFAULT_MODEL, DEFAULT_PRETRAINED, CudaDevice, Report, gather

HELP = "check torch, CUDA, open_clip and the GPU (exit 1 on a problem)"
DESCRIPTION = ("Report Python, torch (and the CUDA it was built for), the CUDA devices with their "
               "fp16/bf16 support, the CPU's bfloat16 instructions, open_clip and the network "
               "the default weights build, the precisions each device runs, and any NVIDIA GPU "
               "found in the file system. Exits 1 when something is wrong, e.g. a GPU that torch "
               "cannot use (a CPU-only torch installed over JetPack's), with what to do.")
EXIT_PROBLEMS = 1
GIB = 1024 ** 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--json, and --root for a file system other than this machine's (tests use a fake Jetson)."""
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--root", type=directory, default="/", metavar="DIR",
                        help="look for NVIDIA device files, the Tegra release and /proc/cpuinfo "
                        "under DIR instead of / (e.g. a robot's mounted root file system)")


def directory(text: str) -> str:
    """--root: an existing folder."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return text


def run(args: argparse.Namespace) -> int:
    """Print the report; 1 when it found a problem, so scripts and CI can gate on it."""
    report = gather(args.root)
    print(json.dumps(report.to_dict(), indent=1) if args.json else "\n".join(human_lines(report)))
    return EXIT_PROBLEMS if report.problems else 0


def human_lines(report: Report) -> list[str]:
    """The report as aligned `what  value` lines, problems last."""
    rows = [("python", f"{report.python} ({report.machine})"), ("torch", _torch_text(report)),
            ("CUDA usable", "yes" if report.cuda_available else "no")]
    rows += [(f"cuda:{d.index}", _device_text(d)) for d in report.cuda_devices]
    rows += [("CPU bf16", _cpu_bf16_text(report.cpu_bf16_native)), ("NVIDIA GPU", _gpu_text(report)),
             ("open_clip", report.open_clip_version or f"not importable ({report.open_clip_error})"),
             ("network", _network_text(report)),
             ("packages", f"missing {', '.join(report.missing_packages)}" if report.missing_packages
              else "all there")]
    rows += [("precisions" if i == 0 else "", f"{device}: {', '.join(names)}")
             for i, (device, names) in enumerate(report.precisions.items())]
    rows += [("problem", problem) for problem in report.problems] or [("problems", "none")]
    return [f"{what:<12} {value}" for what, value in rows]


def _torch_text(report: Report) -> str:
    """torch's version and build, or why it does not import."""
    if report.torch_version is None:
        return f"not importable ({report.torch_error})"
    build = f"built for CUDA {report.torch_cuda}" if report.torch_cuda else "CPU-only build"
    cudnn = f", cuDNN {report.cudnn}" if report.cudnn else ""
    return f"{report.torch_version}, {build}{cudnn}; torchvision {report.torchvision_version or 'missing'}"


def _network_text(report: Report) -> str:
    """What the default weights build, activation included, or why open_clip cannot build it."""
    if report.network is None:
        return f"cannot be built ({report.network_error or 'open_clip is not importable'})"
    return f"{DEFAULT_MODEL} '{DEFAULT_PRETRAINED}' builds {report.network}"


def _device_text(device: CudaDevice) -> str:
    """One CUDA device: name, capability, memory, half precisions."""
    major, minor = device.capability
    bf16 = "no" if not device.bf16 else "yes" if (major, minor) >= (8, 0) else "emulated only (not used)"
    return (f"{device.name}, compute {major}.{minor}, {device.total_memory / GIB:.1f} GiB, "
            f"fp16 {'yes' if device.fp16 else 'no'}, bf16 {bf16}")


def _cpu_bf16_text(native: bool | None) -> str:
    """Whether precision bf16 on the CPU is fast."""
    if native is None:
        return "unknown (no /proc/cpuinfo flags to read)"
    return "native instructions (bf16 is fast)" if native else "no native instructions (bf16 is slow)"


def _gpu_text(report: Report) -> str:
    """The NVIDIA GPU signs found without torch."""
    gpu = report.gpu
    if not gpu.present:
        return "none found (no /dev/nvidia*, /dev/nvhost-*, not a Jetson)"
    parts = [gpu.model if gpu.tegra and gpu.model else "Jetson (Tegra)" if gpu.tegra else "present"]
    if gpu.tegra_release:
        parts.append(gpu.tegra_release.lstrip("# "))
    if gpu.device_files:
        parts.append(" ".join(gpu.device_files))
    return "; ".join(parts)
