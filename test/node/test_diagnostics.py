"""The /diagnostics rate counts the frames of a time window, on a clock the test sets: it falls
to 0 once frames stop, where it once kept the last frames' rate for as long as the node ran."""
from __future__ import annotations

import pytest

from tagclip_ros.node.diagnostics import RATE_WINDOW_S, WINDOW, FrameStats


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_the_frames_of_the_window_and_falls_to_zero_when_they_stop():
    clock = Clock()
    stats = FrameStats(clock)
    assert stats.summary()["rate_hz"] == 0.0
    for _ in range(int(2 * RATE_WINDOW_S)):  # 2 Hz for one window
        clock.now += 0.5
        stats.record(0.2, 0.1)
    assert stats.summary()["rate_hz"] == pytest.approx(2.0)
    clock.now += RATE_WINDOW_S / 2  # the camera stops: half the window's frames are left
    assert stats.summary()["rate_hz"] == pytest.approx(1.0)
    clock.now += RATE_WINDOW_S / 2
    summary = stats.summary()
    assert summary["rate_hz"] == 0.0
    assert summary["latency_ms"] == pytest.approx(200) and summary["core_ms"] == pytest.approx(100)
    assert stats.processed == 2 * RATE_WINDOW_S


def test_latency_is_the_mean_of_the_last_frames():
    clock = Clock()
    stats = FrameStats(clock)
    for latency in [9.0] * 5 + [0.1] * WINDOW:  # the 9 s frames have left the window
        clock.now += 1.0
        stats.record(latency, latency / 2)
    assert stats.summary()["latency_ms"] == pytest.approx(100)
    assert stats.summary()["core_ms"] == pytest.approx(50)
