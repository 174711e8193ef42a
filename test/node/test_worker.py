"""The inference worker keeps only the newest frame and survives failures. Every step waits
for an event the worker signals, never for a fixed time, so a loaded machine only slows it."""
from __future__ import annotations

import threading

from tagclip_ros.node.worker import LatestFrameWorker

WAIT_S = 60  # generous: reached only if the worker is broken


def test_only_newest_frame_is_processed_and_drops_are_counted():
    started, gate, done, seen, errors = threading.Event(), threading.Event(), threading.Event(), [], []

    def process(frame: int) -> None:
        started.set()
        assert gate.wait(WAIT_S)
        seen.append(frame)
        if frame == 5:
            done.set()
    worker = LatestFrameWorker(process, errors.append)
    worker.start()
    worker.submit(0)
    assert started.wait(WAIT_S)  # frame 0 is in progress
    for frame in range(1, 6):
        worker.submit(frame)
    gate.set()
    assert done.wait(WAIT_S)
    worker.stop()
    assert seen == [0, 5] and worker.dropped == 4 and not errors


def test_tasks_run_before_the_next_frame_and_errors_do_not_stop_the_thread():
    order, errors, handled = [], [], threading.Semaphore(0)

    def process(frame: int) -> None:
        try:
            if frame == 1:
                raise RuntimeError("boom")
            order.append(("frame", frame))
        finally:
            handled.release()
    worker = LatestFrameWorker(process, errors.append)
    worker.call_soon(lambda: order.append(("task", 0)))
    worker.submit(2)
    worker.start()
    for frame in (1, 3):  # each frame after the last one was handled: none replaces another
        assert handled.acquire(timeout=WAIT_S)
        worker.submit(frame)
    assert handled.acquire(timeout=WAIT_S)
    worker.stop()
    assert order == [("task", 0), ("frame", 2), ("frame", 3)]
    assert [str(e) for e in errors] == ["boom"] and worker.dropped == 0
