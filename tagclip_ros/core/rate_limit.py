"""A frame-rate limit: which arriving frames to work on so that at most `max_rate` a second are.

The node asks before any work on a frame (before decoding it), so that a camera faster than the
planner needs costs no GPU time. Arrival times, not frame stamps, are what is limited.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

EARLY = 0.5  # how early, in periods, a frame may come and still be taken: a camera's jitter


class RateLimiter:
    """Admits arrivals at `max_rate` per second at most, on average (0: every arrival), by the
    generic cell rate algorithm: each admitted arrival sets the next one's due time a period
    (1 / max_rate s) after the later of its own due time and its arrival, and an arrival is
    admitted from half a period before its due time on. The half period absorbs a camera's
    jitter (a 30 Hz camera under max_rate 15 gives 15 Hz, not 10) without letting bursts
    through: of arrivals in any T seconds at most T × max_rate + 1.5 are admitted, and a pause
    saves up nothing. Arrivals held back do not count. `clock` gives seconds (monotonic; a
    test passes its own)."""

    def __init__(self, max_rate: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.max_rate = 0.0
        self._due: float | None = None
        self.set_rate(max_rate)

    def set_rate(self, max_rate: float) -> None:
        """Limit to `max_rate` Hz from now on (0: no limit); the next arrival is admitted."""
        if not (math.isfinite(max_rate) and max_rate >= 0.0):
            raise ValueError(f"max_rate must be a number of frames per second, 0 for no limit, "
                             f"not {max_rate}")
        self.max_rate = float(max_rate)
        self._due = None

    def admit(self) -> bool:
        """Whether a frame arriving now is to be worked on."""
        if self.max_rate == 0.0:
            return True
        now, period = self._clock(), 1.0 / self.max_rate
        due = now if self._due is None else self._due
        if now < due - EARLY * period:
            return False
        self._due = max(due, now) + period
        return True
