"""A background thread that processes only the newest frame (no queue, no stale latency)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Frame = TypeVar("Frame")


class LatestFrameWorker(Generic[Frame]):
    """Runs `process(frame)` off the caller's thread. A frame submitted while another waits
    replaces it (and is counted as dropped), so latency never grows with the input rate.
    Control tasks (`call_soon`) run before the next frame, in order."""

    def __init__(self, process: Callable[[Frame], None],
                 on_error: Callable[[Exception], None], name: str = "inference") -> None:
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Frame | None = None
        self._tasks: list[Callable[[], None]] = []
        self._running = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.dropped = 0
        self.busy = False

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
            self._pending = None
            self._tasks = []
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(self, frame: Frame) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = frame
            self._cond.notify()

    def call_soon(self, task: Callable[[], None]) -> None:
        with self._cond:
            self._tasks.append(task)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: not self._running or self._pending is not None
                                    or self._tasks)
                if not self._running:
                    return
                tasks, self._tasks = self._tasks, []
                frame, self._pending = self._pending, None
                self.busy = True
            try:
                for task in tasks:
                    self._run(task)
                if frame is not None:
                    self._run(lambda: self._process(frame))
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
