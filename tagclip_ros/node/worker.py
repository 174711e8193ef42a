"""A background thread that processes only the newest frame of each camera (no queue, no stale
latency), the cameras in turn (core.schedule)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ..core.schedule import NewestPerCamera

Frame = TypeVar("Frame")


class LatestFrameWorker(Generic[Frame]):
    """Runs `process(frame)` off the caller's thread. A frame submitted while another of the
    same camera waits replaces it (and is counted as dropped), so latency never grows with the
    input rate; cameras with a frame waiting are served round-robin. With `process_batch`, up to
    `batch_limit()` waiting frames (one per camera) are handed over together when more than one
    waits. Control tasks (`call_soon`) run before the next frame, in order."""

    def __init__(self, process: Callable[[Frame], None],
                 on_error: Callable[[Exception], None], name: str = "inference",
                 process_batch: Callable[[list[Frame]], None] | None = None,
                 batch_limit: Callable[[], int] = lambda: 1) -> None:
        self._process = process
        self._process_batch = process_batch
        self._batch_limit = batch_limit
        self._on_error = on_error
        self._cond = threading.Condition()
        self._waiting: NewestPerCamera[Frame] = NewestPerCamera()
        self._tasks: list[Callable[[], None]] = []
        self._running = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.busy = False

    @property
    def dropped(self) -> int:
        """Frames replaced before being processed, all cameras together."""
        with self._cond:
            return self._waiting.total_dropped

    def dropped_by(self, camera: Hashable) -> int:
        """Frames of `camera` replaced before being processed."""
        with self._cond:
            return self._waiting.dropped.get(camera, 0)

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread; pending frames and tasks are discarded. A frame (or task) in
        progress cannot be interrupted: this waits at most `timeout` s for it and returns
        whether the thread has ended. If not, the thread ends by itself once that frame is
        done; an error it raises then is not reported (it comes from the teardown)."""
        with self._cond:
            self._running = False
            self._waiting.clear()
            self._tasks = []
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(self, frame: Frame, camera: Hashable = "") -> None:
        with self._cond:
            self._waiting.put(camera, frame)
            self._cond.notify()

    def call_soon(self, task: Callable[[], None]) -> None:
        with self._cond:
            self._tasks.append(task)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: not self._running or len(self._waiting) > 0
                                    or self._tasks)
                if not self._running:
                    return
                tasks, self._tasks = self._tasks, []
                limit = self._batch_limit() if self._process_batch is not None else 1
                frames = [frame for _, frame in self._waiting.take(max(1, limit))]
                self.busy = True
            try:
                for task in tasks:
                    self._run(task)
                if len(frames) > 1:
                    self._run(lambda: self._process_batch(frames))
                elif frames:
                    self._run(lambda: self._process(frames[0]))
            finally:
                self.busy = False

    def _run(self, job: Callable[[], None]) -> None:
        """Run one task or frame, unless stopped meanwhile. A failure is reported and skips
        only this job: the thread must outlive any one frame or task, and a failed task must
        not keep the tasks after it (later parameter changes) from being applied."""
        if not self._running:
            return
        try:
            job()
        except Exception as exc:
            if self._running:
                self._on_error(exc)
