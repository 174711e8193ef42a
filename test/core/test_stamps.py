"""Pairing frames with the depth image nearest their stamp, within a delay, from a bounded buffer."""
from __future__ import annotations

import pytest

from tagclip_ros.core.stamps import NS_PER_S, NoMatch, StampPairer, stamp_ns

MS = NS_PER_S // 1000
T = stamp_ns(1_700_000_000, 0)


def test_a_frame_takes_the_nearest_buffered_item_within_the_delay():
    pairer = StampPairer(0.05, "depth image")
    for offset in (-60, -20, 10, 30):
        pairer.add(T + offset * MS, offset)
    assert pairer.wait(T).result() == 10
    assert pairer.wait(T + 25 * MS).result() == 30
    assert pairer.wait(T - 50 * MS).result() == -60  # 10 ms away; -20 is 30 ms away


def test_the_delay_is_inclusive_and_a_tie_goes_to_the_item_offered_first():
    pairer = StampPairer(0.05, "depth image")
    pairer.add(T - 50 * MS, "before")
    pairer.add(T + 50 * MS, "after")
    assert pairer.wait(T).result() == "before"
    assert StampPairer(0.05, "x").max_delay_ns == 50 * MS


def test_an_item_arriving_after_its_frame_is_paired_with_it():
    pairer = StampPairer(0.05, "depth image")
    pairer.add(T - 40 * MS, "early")
    wait = pairer.wait(T)
    pairer.add(T + 5 * MS, "late but nearer")
    pairer.add(T + 80 * MS, "too late")
    assert wait.result() == "late but nearer"


def test_only_the_last_open_waits_frames_take_later_items():
    pairer = StampPairer(0.05, "depth image", open_waits=2)
    first = pairer.wait(T)
    pairer.wait(T + 100 * MS)
    pairer.wait(T + 200 * MS)  # the first frame's wait is closed
    pairer.add(T, "exact")
    with pytest.raises(NoMatch, match="none has arrived"):
        first.result()


def test_the_buffer_keeps_the_last_capacity_items():
    pairer = StampPairer(0.05, "depth image", capacity=3)
    for i in range(5):
        pairer.add(T + i * 10 * MS, i)
    with pytest.raises(NoMatch, match=r"the nearest is 0\.060 s away"):
        pairer.wait(T - 40 * MS).result()  # items 0 and 1 (40 and 50 ms away) are gone
    assert pairer.wait(T + 40 * MS).result() == 4


@pytest.mark.parametrize("items, message", [
    ([], "no depth image within 0.05 s of the frame (none has arrived)"),
    ([-51, 120], "no depth image within 0.05 s of the frame (the nearest is 0.051 s away)"),
])
def test_no_item_within_the_delay_is_one_sentence(items, message):
    pairer = StampPairer(0.05, "depth image")
    for offset in items:
        pairer.add(T + offset * MS, offset)
    with pytest.raises(NoMatch) as raised:
        pairer.wait(T).result()
    assert str(raised.value) == message


def test_a_frame_is_settled_once_an_item_past_its_delay_came():
    pairer = StampPairer(0.05, "depth image")
    assert not pairer.settled(T)
    pairer.add(T + 50 * MS, 1)
    assert not pairer.settled(T)
    pairer.add(T + 51 * MS, 2)
    pairer.add(T - 1000 * MS, 3)  # an older stamp does not unsettle it
    assert pairer.settled(T) and not pairer.settled(T + 1 * MS)


def test_a_negative_delay_is_refused():
    with pytest.raises(ValueError, match="≥ 0 s"):
        StampPairer(-0.01, "depth image")
