"""core.schedule: the newest frame per camera, cameras in turn."""
from __future__ import annotations

from tagclip_ros.core.schedule import NewestPerCamera


def test_a_camera_keeps_only_its_newest_item_and_counts_the_replaced():
    slots = NewestPerCamera()
    assert not slots.put("a", 1) and slots.put("a", 2) and slots.put("a", 3)
    assert slots.take() == [("a", 3)] and slots.take() == []
    assert slots.dropped == {"a": 2} and slots.total_dropped == 2 and len(slots) == 0


def test_cameras_are_taken_in_turn_from_after_the_last_served():
    slots = NewestPerCamera()
    for key in "abc":
        slots.put(key, key + "0")
    assert slots.take() == [("a", "a0")]
    slots.put("a", "a1")  # a waits again: still after b and c
    assert slots.take() == [("b", "b0")] and slots.take() == [("c", "c0")]
    assert slots.take() == [("a", "a1")]
    slots.put("c", "c1")
    slots.put("b", "b1")
    assert slots.take(limit=5) == [("b", "b1"), ("c", "c1")]  # order of first sight, from after a


def test_a_fast_camera_cannot_starve_a_slow_one():
    """Fast puts a frame before every take, slow every fifth: each slow frame is taken before
    the next one comes, so none is dropped; fast gets every other turn at least."""
    slots, taken = NewestPerCamera(), []
    for step in range(100):
        slots.put("fast", step)
        if step % 5 == 0:
            slots.put("slow", step)
        taken += slots.take()
    assert [i for key, i in taken if key == "slow"] == list(range(0, 100, 5))
    assert slots.dropped["slow"] == 0
    assert sum(key == "fast" for key, _ in taken) >= 79


def test_a_limit_takes_that_many_cameras_at_most_and_clear_keeps_counts_and_turn():
    slots = NewestPerCamera()
    for key in "abcd":
        slots.put(key, key)
        slots.put(key, key.upper())
    assert slots.take(limit=3) == [("a", "A"), ("b", "B"), ("c", "C")]
    slots.put("a", "x")
    slots.clear()
    assert len(slots) == 0 and slots.take() == [] and slots.total_dropped == 4
    slots.put("a", "y")
    slots.put("d", "z")
    assert slots.take(limit=2) == [("d", "z"), ("a", "y")]  # the turn went on from c
