"""Pairing each frame with the companion message (an aligned depth image) nearest its stamp.

A depth camera publishes beside its colour camera, and the two streams' messages arrive in
either order. A frame is paired with the item whose stamp is nearest its own, within
`max_delay` seconds. The node pairs once a frame's inference is done, an inference after the
frame arrived (seconds on a CPU): a buffer spanning that long would hold seconds of depth
images. So each frame opens a `Wait` as it arrives, which takes the nearest item already
buffered and is offered each item added afterwards. The buffer then only needs the items that
come before their frame, and the open waits only the last few frames' (a frame's pairing is
settled once an item stamped past its `max_delay` has come). `tagclip bag` uses the same, with
a reader running ahead of the frames until `settled`.

Stamps are integer nanoseconds (a ROS Time's sec * 10**9 + nanosec), so pairing is exact.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")

NS_PER_S = 10**9
DEFAULT_CAPACITY = 15  # items kept for frames still to come: half a second of a 30 Hz stream
DEFAULT_OPEN = 8       # frames whose waits still take items that arrive after them


class NoMatch(ValueError):
    """No item within the delay of a frame's stamp; the message says why in one sentence."""


def stamp_ns(sec: int, nanosec: int) -> int:
    """A ROS Time as integer nanoseconds."""
    return int(sec) * NS_PER_S + int(nanosec)


class Wait(Generic[Item]):
    """One frame's pairing: of the items offered, the one nearest its stamp within the delay
    (on a tie, the one offered first)."""

    def __init__(self, stamp: int, max_delay_ns: int, what: str) -> None:
        self.stamp = stamp
        self.max_delay_ns = max_delay_ns
        self.what = what
        self._best: tuple[int, Item] | None = None  # gap (ns), item
        self._nearest_gap: int | None = None  # of any item offered, within the delay or not

    def offer(self, stamp: int, item: Item) -> None:
        """Keep `item` if it is within the delay and nearer than the best so far."""
        gap = abs(stamp - self.stamp)
        if self._nearest_gap is None or gap < self._nearest_gap:
            self._nearest_gap = gap
        if gap <= self.max_delay_ns and (self._best is None or gap < self._best[0]):
            self._best = (gap, item)

    def result(self) -> Item:
        """The paired item; NoMatch saying why there is none."""
        if self._best is not None:
            return self._best[1]
        delay = self.max_delay_ns / NS_PER_S
        if self._nearest_gap is None:
            raise NoMatch(f"no {self.what} within {delay:g} s of the frame (none has arrived)")
        raise NoMatch(f"no {self.what} within {delay:g} s of the frame (the nearest is "
                      f"{self._nearest_gap / NS_PER_S:.3f} s away)")


class StampPairer(Generic[Item]):
    """The last `capacity` items by stamp and the waits of the last `open_waits` frames
    (thread-safe: items and frames may come from different threads)."""

    def __init__(self, max_delay_s: float, what: str, capacity: int = DEFAULT_CAPACITY,
                 open_waits: int = DEFAULT_OPEN) -> None:
        if not max_delay_s >= 0.0:
            raise ValueError(f"the delay between paired stamps must be ≥ 0 s, not {max_delay_s}")
        self.max_delay_ns = round(max_delay_s * NS_PER_S)
        self.what = what
        self._lock = threading.Lock()
        self._items: deque[tuple[int, Item]] = deque(maxlen=capacity)
        self._waits: deque[Wait[Item]] = deque(maxlen=open_waits)
        self._newest: int | None = None  # the latest stamp added

    def add(self, stamp: int, item: Item) -> None:
        """A new item: kept for frames to come and offered to the open waits."""
        with self._lock:
            self._items.append((stamp, item))
            self._newest = stamp if self._newest is None else max(self._newest, stamp)
            for wait in self._waits:
                wait.offer(stamp, item)

    def wait(self, stamp: int) -> Wait[Item]:
        """Open the pairing of a frame stamped `stamp`: offered the buffered items now and
        every item added while it is among the last `open_waits` frames'."""
        wait: Wait[Item] = Wait(stamp, self.max_delay_ns, self.what)
        with self._lock:
            for item_stamp, item in self._items:
                wait.offer(item_stamp, item)
            self._waits.append(wait)
        return wait

    def settled(self, stamp: int) -> bool:
        """Whether an item stamped past `stamp` + the delay has been added: with stamps in
        order, no later item can pair with a frame stamped `stamp` any more."""
        with self._lock:
            return self._newest is not None and self._newest > stamp + self.max_delay_ns
