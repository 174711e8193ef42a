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


def test_cameras_are_served_in_turn_and_a_busy_one_does_not_starve_the_others():
    """Camera "fast" submits a frame whenever one is processed; "slow" only now and then:
    every slow frame is processed (at most one turn of "fast" before it), none dropped."""
    seen, errors, handled = [], [], threading.Semaphore(0)

    def process(frame: tuple[str, int]) -> None:
        seen.append(frame)
        handled.release()
    worker = LatestFrameWorker(process, errors.append)
    worker.submit(("fast", 0), "fast")
    worker.submit(("fast", 1), "fast")  # replaces frame 0: dropped
    worker.submit(("slow", 0), "slow")
    worker.start()
    for i in range(2, 12):
        assert handled.acquire(timeout=WAIT_S)
        worker.submit(("fast", i), "fast")
        if i % 3 == 0:
            worker.submit(("slow", i), "slow")
    while len(seen) < 12 and handled.acquire(timeout=5):
        pass
    worker.stop()
    slow = [i for camera, i in seen if camera == "slow"]
    assert slow == [0, 3, 6, 9] and worker.dropped_by("slow") == 0, seen
    assert worker.dropped_by("fast") >= 1 and worker.dropped == worker.dropped_by("fast") and not errors
    assert seen[0] == ("fast", 1)


def test_with_batches_the_waiting_frames_of_several_cameras_go_together():
    batches, singles, errors, gate, started = [], [], [], threading.Event(), threading.Event()
    done = threading.Event()

    def process(frame: str) -> None:
        started.set()
        assert gate.wait(WAIT_S)
        singles.append(frame)

    def process_batch(frames: list[str]) -> None:
        batches.append(frames)
        done.set()
    worker = LatestFrameWorker(process, errors.append, process_batch=process_batch,
                               batch_limit=lambda: 2)
    worker.start()
    worker.submit("a0", "a")
    assert started.wait(WAIT_S)  # a0 alone, in progress
    for frame, camera in (("b0", "b"), ("c0", "c"), ("a1", "a")):
        worker.submit(frame, camera)
    gate.set()
    assert done.wait(WAIT_S)
    worker.stop()
    # after a: b and c (the turn goes on from a), two at most; a1 waits for the next batch
    assert singles[0] == "a0" and batches[0] == ["b0", "c0"] and not errors
