"""Which camera's frame is worked on next: the newest frame of each, cameras taken in turn.

One model serves several cameras (the node's `cameras`). Each camera keeps only its newest
frame (an older one waiting is replaced, and counted as dropped, so latency never grows with a
camera's rate), and the cameras with a frame waiting are served round-robin, in the order they
were first seen: a camera at 30 Hz cannot starve one at 5 Hz, as each frame of the slow one
waits at most one turn of every other camera. Not thread-safe: the caller holds its own lock.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class NewestPerCamera(Generic[Item]):
    """The newest waiting item of each key (camera), taken round-robin."""

    def __init__(self) -> None:
        self._order: list[Hashable] = []  # keys in the order they were first seen
        self._waiting: dict[Hashable, Item] = {}
        self._last: int = -1  # index in _order of the key served last: the next turn starts after it
        self.dropped: dict[Hashable, int] = {}  # per key: items replaced before being taken

    def put(self, key: Hashable, item: Item) -> bool:
        """Make `item` the key's waiting one; returns whether it replaced (dropped) another."""
        if key not in self.dropped:
            self._order.append(key)
            self.dropped[key] = 0
        replaced = key in self._waiting
        if replaced:
            self.dropped[key] += 1
        self._waiting[key] = item
        return replaced

    def take(self, limit: int = 1) -> list[tuple[Hashable, Item]]:
        """Up to `limit` waiting items, one per key, in turn from where the last take stopped
        (the key after the last one served); they stop waiting."""
        taken: list[tuple[Hashable, Item]] = []
        count, start = len(self._order), self._last + 1
        for step in range(count):
            if len(taken) >= limit:
                break
            index = (start + step) % count
            key = self._order[index]
            if key in self._waiting:
                taken.append((key, self._waiting.pop(key)))
                self._last = index
        return taken

    def clear(self) -> None:
        """Forget the waiting items (not the counts or the turn)."""
        self._waiting.clear()

    def __len__(self) -> int:
        """How many keys have an item waiting."""
        return len(self._waiting)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())
