"""The facts behind `tagclip doctor`: can this machine run TagCLIP, on which devices and in which
precisions, and, when an NVIDIA GPU is there but torch cannot use it, why and what to do.

The usual failure it exists for: on a Jetson, `pip install` replaced JetPack's CUDA-enabled
torch with a build that cannot see the GPU, and everything runs silently on the CPU. The GPU is
therefore looked for in the file system (device files, Tegra release), independently of torch.

ROS-free (no rclpy). torch, torchvision and open_clip are imported inside the functions that
need them, so that a broken install is reported as a problem rather than a traceback.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import platform
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
JETSON_README = 'docs/jetson.md'
# Capabilities from which a CUDA GPU computes in float16 / natively in bfloat16.
FP16_CAPABILITY = (5, 3)
BF16_CAPABILITY = (8, 0)
# /proc/cpuinfo flags of native bfloat16 matrix instructions, by platform.machine().
CPU_BF16_FLAGS = {"x86_64": {"avx512_bf16", "amx_bf16"}, "aarch64": {"bf16"}}
NVIDIA_DEVICE_FILE = re.compile(r"nvidia(\d+|ctl)$|nvhost-")
# What the core, its tests and scripts/gpu_check.sh import: distribution → module. A bare CUDA
# machine has all but the last three (requirements/gpu_check.txt, fetched as wheels).
NEEDED_MODULES = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "pillow": "PIL",
    "opencv-python-headless": "cv2", "tqdm": "tqdm", "psutil": "psutil", "pytest": "pytest",
    "timm": "timm", "huggingface_hub": "huggingface_hub", "safetensors": "safetensors",
    "regex": "regex", "open_clip_torch": "open_clip", "ftfy": "ftfy", "wcwidth": "wcwidth",
}
WHEELS_HINT = ('on a machine without network, run scripts/fetch_wheels.sh DIR where a package '
               'registry is reachable and scripts/gpu_check.sh OUTDIR --wheels DIR there (docs/gpu.md)')


@dataclass
class CudaDevice:
    """One CUDA device as torch sees it."""
    index: int
    name: str
    capability: tuple[int, int]
    total_memory: int  # bytes
    fp16: bool
    bf16: bool  # torch.cuda.is_bf16_supported() (may be emulated below capability 8.0)


@dataclass
class GpuPresence:
    """Signs of an NVIDIA GPU in the file system, whatever torch thinks."""
    device_files: list[str]  # /dev/nvidia0, /dev/nvidiactl, /dev/nvhost-* (Jetson)
    tegra: bool  # a Jetson: /etc/nv_tegra_release, or a device-tree model "NVIDIA Jetson ..."
    model: str | None  # /proc/device-tree/model
    tegra_release: str | None  # first line of /etc/nv_tegra_release (the L4T version)
    present: bool


@dataclass
class Report:
    """Everything `tagclip doctor` says; `problems` empty when all is well."""
    python: str
    machine: str
    torch_version: str | None
    torch_error: str | None
    torch_cuda: str | None  # the CUDA version torch was built with; None: a CPU-only build
    cudnn: int | None
    torchvision_version: str | None
    cuda_available: bool
    cuda_devices: list[CudaDevice]
    cpu_bf16_native: bool | None  # None: /proc/cpuinfo unreadable or an unknown machine
    open_clip_version: str | None
    open_clip_error: str | None
    network: str | None  # what the default weights build (describe_pretrained)
    network_error: str | None
    gpu: GpuPresence
    missing_packages: list[str] = field(default_factory=list)  # distributions of NEEDED_MODULES
    precisions: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (tuples become lists when dumped)."""
        return dataclasses.asdict(self)


def gather(root: str = "/") -> Report:
    """Look at this Python, torch, open_clip and the machine (its file system under `root`,
    so that tests and containers can point it elsewhere), then find the problems."""
    machine = platform.machine()
    torch_facts = _torch_facts()
    open_clip_version, open_clip_error, network, network_error = _open_clip_facts()
    report = Report(
        python=sys.version.split()[0], machine=machine, **torch_facts,
        cpu_bf16_native=cpu_bf16_native(os.path.join(root, "proc", "cpuinfo"), machine),
        open_clip_version=open_clip_version, open_clip_error=open_clip_error,
        network=network, network_error=network_error, gpu=gpu_presence(root),
        missing_packages=missing_packages())
    if report.torch_version is not None:
        report.precisions = runnable_precisions(report.cuda_devices)
    report.problems = find_problems(report)
    return report


def missing_packages() -> list[str]:
    """The distributions of NEEDED_MODULES whose module this Python cannot find."""
    return [dist for dist, module in NEEDED_MODULES.items() if importlib.util.find_spec(module) is None]


def _torch_facts() -> dict[str, Any]:
    """torch's version, build and CUDA devices (all None/empty when torch does not import)."""
    facts: dict[str, Any] = {"torch_version": None, "torch_error": None, "torch_cuda": None,
                             "cudnn": None, "torchvision_version": None, "cuda_available": False,
                             "cuda_devices": []}
    try:
        import torch
    except Exception as exc:  # any import failure (missing, bad shared library) is the finding
        facts["torch_error"] = first_line(exc)
        return facts
    available = torch.cuda.is_available()
    facts.update(torch_version=torch.__version__, torch_cuda=torch.version.cuda,
                 cudnn=_cudnn_version(torch), torchvision_version=_torchvision_version(),
                 cuda_available=available,
                 cuda_devices=[cuda_device(i) for i in range(torch.cuda.device_count())]
                 if available else [])
    return facts


def _cudnn_version(torch: Any) -> int | None:
    """cuDNN's version torch was built with, if it has cuDNN."""
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # a cuDNN library that fails to load is not worth a traceback here
        return None


def _torchvision_version() -> str | None:
    """torchvision's version, None when it does not import (open_clip then fails too)."""
    try:
        import torchvision
    except Exception:
        return None
    return torchvision.__version__


def cuda_device(index: int) -> CudaDevice:
    """Name, capability, memory and half-precision support of one CUDA device."""
    import torch
    props = torch.cuda.get_device_properties(index)
    capability = (props.major, props.minor)
    with torch.cuda.device(index):  # is_bf16_supported asks about the current device
        try:
            bf16 = bool(torch.cuda.is_bf16_supported())
        except Exception:
            bf16 = capability >= BF16_CAPABILITY
    return CudaDevice(index=index, name=props.name, capability=capability,
                      total_memory=int(props.total_memory), fp16=capability >= FP16_CAPABILITY,
                      bf16=bf16)


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo text (x86 `flags`, ARM `Features` lines)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_bf16_native(cpuinfo_path: str, machine: str) -> bool | None:
    """Whether the CPU has native bfloat16 matrix instructions (precision bf16 on the CPU is
    fast only with them); None when cpuinfo cannot be read or the machine is not known."""
    wanted = CPU_BF16_FLAGS.get(machine)
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return None if wanted is None else bool(cpu_flags(text) & wanted)


def gpu_presence(root: str = "/") -> GpuPresence:
    """NVIDIA device files under root/dev and a Jetson's Tegra marks under root/etc and
    root/proc, read without torch."""
    try:
        names = sorted(n for n in os.listdir(os.path.join(root, "dev")) if NVIDIA_DEVICE_FILE.match(n))
    except OSError:
        names = []
    model = _read_text(os.path.join(root, "proc", "device-tree", "model"))
    release_path = os.path.join(root, "etc", "nv_tegra_release")
    release = _read_text(release_path)
    tegra = os.path.exists(release_path) or "NVIDIA Jetson" in (model or "")
    files = [f"/dev/{name}" for name in names]
    return GpuPresence(device_files=files, tegra=tegra, model=model,
                       tegra_release=release.splitlines()[0].strip() if release else None,
                       present=bool(files) or tegra)


def _read_text(path: str) -> str | None:
    """A small text file's content without NULs (device-tree strings end with one)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\0", "").strip() or None
    except OSError:
        return None


def _open_clip_facts() -> tuple[str | None, str | None, str | None, str | None]:
    """open_clip's version or import error, and the network the default weights build or why
    it cannot be built."""
    try:
        import open_clip
    except Exception as exc:  # e.g. a torchvision built for another torch fails here
        return None, first_line(exc), None, None
    try:
        from .loading import describe_pretrained
        with quiet_logging():  # open_clip warns that no pretrained weights were loaded
            network = describe_pretrained(DEFAULT_MODEL, DEFAULT_PRETRAINED)
    except Exception as exc:
        return open_clip.__version__, None, None, first_line(exc)
    return open_clip.__version__, None, network, None


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence log records below ERROR for a while (open_clip logs through the root logger)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def runnable_precisions(devices: list[CudaDevice]) -> dict[str, list[str]]:
    """The precisions the package runs in on each device, as core/device.py's resolve_precision
    allows them: fp32 everywhere; bf16 on the CPU (fp16 is refused there: its products are very
    slow); on a GPU fp16 when it computes in it, bf16 only from capability 8.0 (torch emulates it
    below, slowly, and the package refuses that)."""
    result = {"cpu": ["fp32", "bf16"]}
    for device in devices:
        native_bf16 = device.bf16 and device.capability >= BF16_CAPABILITY
        result[f"cuda:{device.index}"] = (["fp32"] + (["fp16"] if device.fp16 else [])
                                          + (["bf16"] if native_bf16 else []))
    return result


def find_problems(report: Report) -> list[str]:
    """What stops the package from working, or from using the GPU, each one sentence saying
    what to do."""
    problems = []
    if report.torch_version is None:
        problems.append(f"torch is not importable ({report.torch_error}): install it with "
                        "`pip install -r requirements/torch.txt`, or on a Jetson NVIDIA's wheel "
                        f"as in {JETSON_README}.")
    elif report.gpu.present and not report.cuda_available:
        problems.append(_unused_gpu_problem(report))
    if report.missing_packages:
        problems.append(f"Missing Python packages: {', '.join(report.missing_packages)}: install "
                        "them with `pip install -r requirements/core.txt -r requirements/test.txt` "
                        f"(scripts/bootstrap.sh does), or, {WHEELS_HINT}.")
    elif report.open_clip_version is None:
        problems.append(f"open_clip is not importable ({report.open_clip_error}): install it "
                        "with `pip install -r requirements/core.txt` (scripts/bootstrap.sh does).")
    elif report.network is None:
        problems.append(f"open_clip cannot build {DEFAULT_MODEL} ({report.network_error}): "
                        "reinstall the open_clip_torch version of requirements/core.txt.")
    return problems


def _unused_gpu_problem(report: Report) -> str:
    """The sentence for an NVIDIA GPU that torch cannot use, by the likely cause."""
    gpu = report.gpu.model if report.gpu.tegra and report.gpu.model else "an NVIDIA GPU"
    torch_is = f"torch {report.torch_version}"
    if report.torch_cuda is None:
        fix = (f"reinstall JetPack's CUDA torch as in {JETSON_README}" if report.gpu.tegra
               else "install a CUDA build of torch (https://pytorch.org/get-started/locally/)")
        return (f"This machine has {gpu} but {torch_is} is a CPU-only build, which probably "
                f"replaced the CUDA one, so everything runs on the CPU: {fix}.")
    if report.gpu.tegra:
        return (f"This machine has {gpu} but {torch_is} (built for CUDA {report.torch_cuda}) "
                "cannot use it: the CUDA runtime is not usable or this torch is not built for "
                f"JetPack; install NVIDIA's JetPack wheel as in {JETSON_README}.")
    return (f"This machine has {gpu} but {torch_is} (built for CUDA {report.torch_cuda}) cannot "
            "use it: the NVIDIA driver or CUDA runtime is not usable; check `nvidia-smi` (in a "
            "container: run it with `--gpus all`) and that the driver supports "
            f"CUDA {report.torch_cuda}.")


def first_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
