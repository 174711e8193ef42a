"""Frame statistics and the /diagnostics status built from them."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

WINDOW = 30  # frames over which latency is averaged
RATE_WINDOW_S = 10.0  # seconds over which the rate is counted: it falls to 0 this long after frames stop


class FrameStats:
    """Counts and recent timings of processed, dropped and bad frames (thread-safe). `clock`
    gives seconds (monotonic; a test passes its own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._done: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # latency, core time
        self._finished: deque[float] = deque()  # when each frame of the last RATE_WINDOW_S finished
        self.processed = 0
        self.bad = 0
        self.overlays = 0  # overlays drawn: only for frames that had an overlay subscriber
        self.detections = 0  # frames whose regions were computed: only while detections are watched
        self.batched = 0  # frames that went through the model together with other cameras' frames
        self.last_error = ""
        self.depth_skipped = 0  # frames whose detections_3d were wanted but could not be made
        self.last_depth_skip = ""

    def record(self, latency_s: float, core_s: float) -> None:
        with self._lock:
            self.processed += 1
            self._done.append((latency_s, core_s))
            self._finished.append(self._recent())

    def record_overlay(self) -> None:
        with self._lock:
            self.overlays += 1

    def record_detections(self) -> None:
        with self._lock:
            self.detections += 1

    def record_batch(self, frames: int) -> None:
        with self._lock:
            self.batched += frames

    def record_bad(self, reason: str) -> None:
        with self._lock:
            self.bad += 1
            self.last_error = reason

    def record_depth_skip(self, reason: str) -> None:
        with self._lock:
            self.depth_skipped += 1
            self.last_depth_skip = reason

    def _recent(self) -> float:
        """Forget the frames finished before the rate's window; returns the time now."""
        now = self._clock()
        while self._finished and self._finished[0] <= now - RATE_WINDOW_S:
            self._finished.popleft()
        return now

    def summary(self) -> dict[str, float]:
        """Rate (Hz: frames finished in the last RATE_WINDOW_S, per second; 0 once they stop),
        and mean end-to-end and core latency (ms) of the last WINDOW frames."""
        with self._lock:
            done = list(self._done)
            self._recent()
            rate = len(self._finished) / RATE_WINDOW_S
        if not done:
            return {"rate_hz": 0.0, "latency_ms": 0.0, "core_ms": 0.0}
        return {"rate_hz": rate,
                "latency_ms": 1000 * sum(d[0] for d in done) / len(done),
                "core_ms": 1000 * sum(d[1] for d in done) / len(done)}


def diagnostic_array(node_name: str, stamp, stats: FrameStats, dropped: int, state: str,
                     info: dict[str, str], cameras: dict[str, tuple[FrameStats, int]] | None = None
                     ) -> DiagnosticArray:
    """The node's DiagnosticStatus (all frames, the shared model): OK while active and healthy,
    WARN when inactive or frames fail; then one per camera of a multi-camera node
    (`cameras`: name → its statistics and dropped frames)."""
    summary = stats.summary()
    level, message = health(state, stats, summary, paused=info.get("paused") == "true")
    values = {"state": state, **frame_values(stats, dropped, summary),
              "overlays_drawn": str(stats.overlays), "detections_computed": str(stats.detections),
              "frames_batched": str(stats.batched), **info}
    status = DiagnosticStatus(level=level, name=f"{node_name}: inference", message=message,
                              hardware_id=info.get("device", ""),
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    statuses = [status] + [camera_status(node_name, name, camera_stats, camera_dropped, state, info)
                           for name, (camera_stats, camera_dropped) in (cameras or {}).items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=statuses)


def camera_status(node_name: str, camera: str, stats: FrameStats, dropped: int, state: str,
                  info: dict[str, str]) -> DiagnosticStatus:
    """One camera's status: its rate, latency and frame counts (OK, WARN after a bad frame or
    while the node is not active)."""
    summary = stats.summary()
    level, message = health(state, stats, summary)
    values = {"camera": camera, **frame_values(stats, dropped, summary), "last_error": stats.last_error}
    return DiagnosticStatus(level=level, name=f"{node_name}: camera {camera}", message=message,
                            hardware_id=info.get("device", ""),
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


def health(state: str, stats: FrameStats, summary: dict[str, float], paused: bool = False
           ) -> tuple[int, str]:
    """A status's level and message: WARN while the node is not active, OK while paused, WARN
    after a bad frame, else OK with the rate."""
    if state != "active":
        return DiagnosticStatus.WARN, f"node is {state}"
    if paused:
        return DiagnosticStatus.OK, "paused by ~/enable"
    if stats.last_error and stats.bad:
        return DiagnosticStatus.WARN, f"last bad frame: {stats.last_error}"
    return DiagnosticStatus.OK, f"{summary['rate_hz']:.1f} Hz"


def frame_values(stats: FrameStats, dropped: int, summary: dict[str, float]) -> dict[str, str]:
    """The frame counts and timings every status shows (the node's and each camera's)."""
    return {"frames_processed": str(stats.processed), "frames_dropped": str(dropped),
            "frames_bad": str(stats.bad), "depth_skipped": str(stats.depth_skipped),
            "last_depth_skip": stats.last_depth_skip, "rate_hz": f"{summary['rate_hz']:.2f}",
            "latency_ms": f"{summary['latency_ms']:.1f}", "core_ms": f"{summary['core_ms']:.1f}"}
