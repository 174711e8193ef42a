"""The inference worker keeps only the newest frame and survives failures."""
from __future__ import annotations

import threading
import time

from tagclip_ros.node.worker import LatestFrameWorker


def test_only_newest_frame_is_processed_and_drops_are_counted():
    gate, seen, errors = threading.Event(), [], []

    def process(frame: int) -> None:
        gate.wait(5)
        seen.append(frame)
    worker = LatestFrameWorker(process, errors.append)
    worker.start()
    worker.submit(0)
    time.sleep(0.1)  # frame 0 is in progress
    for frame in range(1, 6):
        worker.submit(frame)
    gate.set()
    deadline = time.monotonic() + 5
    while seen != [0, 5] and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert seen == [0, 5] and worker.dropped == 4 and not errors


def test_tasks_run_before_the_next_frame_and_errors_do_not_stop_the_thread():
    order, errors = [], []

    def process(frame: int) -> None:
        if frame == 1:
            raise RuntimeError("boom")
        order.append(("frame", frame))
    worker = LatestFrameWorker(process, errors.append)
    worker.call_soon(lambda: order.append(("task", 0)))
    worker.submit(2)
    worker.start()
    time.sleep(0.2)
    worker.submit(1)
    time.sleep(0.2)
    worker.submit(3)
    time.sleep(0.2)
    worker.stop()
    assert order == [("task", 0), ("frame", 2), ("frame", 3)]
    assert [str(e) for e in errors] == ["boom"]
