"""The frame-rate limit on arrival times given exactly (a test clock): no limit at 0, a burst
gives one frame, jitter keeps the rate, a pause saves nothing up, and no window holds more than
T × max_rate + 1.5 admitted frames."""
from __future__ import annotations

import random

import pytest

from tagclip_ros.core.rate_limit import RateLimiter


class Clock:
    """Seconds that the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admitted(limiter: RateLimiter, clock: Clock, arrivals) -> list[float]:
    taken = []
    for t in arrivals:
        clock.now = t
        if limiter.admit():
            taken.append(t)
    return taken


def test_zero_admits_everything():
    clock = Clock()
    assert admitted(RateLimiter(0.0, clock), clock, [0.0] * 5 + [0.001, 0.002]) == [0.0] * 5 + [0.001, 0.002]


def test_a_burst_gives_one_frame_and_the_next_comes_half_a_period_early_at_most():
    clock = Clock()
    limiter = RateLimiter(4.0, clock)  # period 0.25 s: the next is due at 0.25, taken from 0.125
    assert admitted(limiter, clock, [1.0] * 5) == [1.0]
    assert admitted(limiter, clock, [1.0625, 1.1171875, 1.125, 1.1875]) == [1.125]
    assert admitted(limiter, clock, [1.25, 1.3125, 1.375]) == [1.375]  # due 1.5 now: from 1.375 on


def test_jitter_keeps_the_rate_where_a_minimum_interval_would_halve_it():
    """30 Hz arrivals, each up to 10 ms early or late, under max_rate 15: every other frame."""
    clock, jitter = Clock(), random.Random(7)
    arrivals = [i / 30 + jitter.uniform(-0.01, 0.01) for i in range(300)]
    taken = admitted(RateLimiter(15.0, clock), clock, arrivals)
    assert len(taken) == 150
    min_interval = [arrivals[0]]
    for t in arrivals[1:]:
        if t - min_interval[-1] >= 1 / 15:
            min_interval.append(t)
    assert len(min_interval) < 120  # what "at least a period apart" would have given


def test_a_pause_saves_nothing_up():
    clock = Clock()
    limiter = RateLimiter(2.0, clock)
    assert admitted(limiter, clock, [0.0, 100.0, 100.0, 100.1, 100.25, 100.5]) == [0.0, 100.0, 100.25]


@pytest.mark.parametrize("rate", [0.5, 3.0, 30.0])
def test_no_window_holds_more_than_its_share_and_a_half(rate):
    clock, spread = Clock(), random.Random(11)
    arrivals = sorted(spread.uniform(0, 200 / rate) for _ in range(2000))
    taken = admitted(RateLimiter(rate, clock), clock, arrivals)
    for i, start in enumerate(taken):
        for j in range(i + 1, len(taken)):
            assert j - i + 1 <= (taken[j] - start) * rate + 1.5
    assert len(taken) >= 0.95 * 200  # and the rate is used, arrivals being dense


def test_a_new_rate_applies_at_once_and_admits_the_next_frame():
    clock = Clock()
    limiter = RateLimiter(0.001, clock)
    assert admitted(limiter, clock, [0.0, 1.0, 2.0]) == [0.0]
    limiter.set_rate(0.0)
    assert admitted(limiter, clock, [3.0, 3.0]) == [3.0, 3.0]
    limiter.set_rate(1.0)
    assert admitted(limiter, clock, [3.0, 3.4, 3.5]) == [3.0, 3.5]


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_a_rate_that_is_no_rate_is_refused_with_a_sentence(rate):
    with pytest.raises(ValueError, match="max_rate must be a number of frames per second, 0 for no limit"):
        RateLimiter(rate)
