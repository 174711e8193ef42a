"""The frame gate: whether an arriving frame is worked on at all (`~/enable`, `max_rate`).

Asked in the image callback, before the frame is decoded or queued: a paused node and frames
beyond `max_rate` cost nothing but the callback. Subscriptions and the latched `label_info`
stay as they are, so a planner resumes the node with one service call.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from std_srvs.srv import SetBool

from ..core.rate_limit import RateLimiter

PAUSED_MESSAGE = "paused: frames are dropped until ~/enable is called with true"
RESUMED_MESSAGE = "processing frames"


class FrameGate:
    """Holds frames back while paused (`~/enable` false, all cameras) or arriving faster than
    `max_rate` (core.rate_limit, each camera on its own), and counts each kind for
    /diagnostics. Used from the node's executor thread only (image callback, service, parameter
    callback, diagnostics timer)."""

    def __init__(self, max_rate: float, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = True
        self.max_rate = max_rate
        self._limiters: dict[str, RateLimiter] = {}  # per camera, made at its first frame
        self._clock = clock
        self.paused_frames = 0  # frames that arrived while paused
        self.rate_limited = 0  # frames that arrived faster than max_rate
        self._log = log

    def set_rate(self, max_rate: float) -> None:
        """Limit each camera to `max_rate` Hz from now on (0: no limit)."""
        for limiter in self._limiters.values():
            limiter.set_rate(max_rate)
        self.max_rate = max_rate

    def admit(self, camera: str = "") -> bool:
        """Whether a frame of `camera` arriving now goes on to be processed; if not, it is
        counted."""
        if not self.enabled:
            self.paused_frames += 1
            return False
        limiter = self._limiters.get(camera)
        if limiter is None:
            limiter = self._limiters[camera] = RateLimiter(self.max_rate, self._clock)
        if not limiter.admit():
            self.rate_limited += 1
            return False
        return True

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """The `~/enable` service: false pauses, true resumes; both always succeed."""
        if request.data != self.enabled:
            self._log(RESUMED_MESSAGE if request.data else PAUSED_MESSAGE)
        self.enabled = request.data
        response.success = True
        response.message = RESUMED_MESSAGE if self.enabled else PAUSED_MESSAGE
        return response

    def diagnostics(self) -> dict[str, str]:
        """The gate's /diagnostics values."""
        return {"paused": str(not self.enabled).lower(), "frames_paused": str(self.paused_frames),
                "frames_rate_limited": str(self.rate_limited)}
