"""Where a frame's time goes: wall-clock milliseconds per named stage.

The core's per-frame work (`TagClip.classify`, `Perception.run`) takes an optional
`StageTimer` and times its stages with it (preprocess, coarse, dmar, cwr, clipes, dmar_masks);
callers time their own (overlay). On CUDA, work is queued and runs later, so the timer waits
for the device at each stage boundary; that wait costs throughput, which is why the default,
`NO_TIMER`, times nothing and never waits.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager

import torch

STAGES = ("preprocess", "coarse", "dmar", "cwr", "clipes", "dmar_masks", "overlay")


class StageTimer:
    """Accumulates milliseconds per stage name (a stage entered twice adds up)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        device = torch.device(device) if device is not None else torch.device("cpu")
        self._sync = device.type == "cuda"
        self._device = device
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the `with` block as stage `name`, device work included."""
        self._synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    def reset(self) -> None:
        self.ms = {}

    def _synchronize(self) -> None:
        if self._sync:
            torch.cuda.synchronize(self._device)


class _NoTimer(StageTimer):
    """Times nothing and never waits for the device."""

    def stage(self, name: str) -> ContextManager[None]:  # type: ignore[override]
        return nullcontext()


NO_TIMER: StageTimer = _NoTimer()
