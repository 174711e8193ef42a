"""Device and numeric precision choice: one place that turns user settings into torch types."""
from __future__ import annotations

import torch

from .settings import PRECISION_NAMES

PRECISIONS: dict[str, torch.dtype] = dict(zip(PRECISION_NAMES,
                                              (torch.float32, torch.float16, torch.bfloat16)))


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks the first CUDA GPU when there is one, else the CPU; `cpu`, `cuda`,
    `cuda:N` are taken as given once checked against what this machine has."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for but this machine has no usable "
                             "CUDA GPU; set device to cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    return device


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """Map fp32/fp16/bf16 to a dtype (core/precision.py says what runs in it), refusing what
    `device` cannot compute fast or at all: fp16 needs CUDA (the CPU has no fast float16
    products), bf16 on CUDA a GPU of compute capability 8.0 or more. bf16 on the CPU is
    accepted; it is fast only on CPUs with bfloat16 instructions (`tagclip doctor` tells)."""
    spec = (spec or "fp32").strip().lower()
    if spec not in PRECISIONS:
        raise ValueError(f"precision {spec!r} is not one of {', '.join(PRECISIONS)}")
    if spec == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (float16 products are very slow on "
                         "the CPU); use bf16 or fp32 on the CPU")
    if spec == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        raise ValueError(f"precision bf16 is not supported by the GPU {device}; use fp16 or fp32")
    return PRECISIONS[spec]


def precision_name(dtype: torch.dtype) -> str:
    """The precision setting (fp32, fp16, bf16) of a dtype."""
    for name, value in PRECISIONS.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype {dtype} is not one of the precisions {', '.join(PRECISIONS)}")
