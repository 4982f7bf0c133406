"""Bounded event queues that drop their oldest entry when full and count what they did."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from milonga.scheduler.arguments import positive_count

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 32
"""Events a stream may have waiting before its oldest is dropped.

Small on purpose: for most attributes a fresh value matters more than every transition.
Size a queue up with ``allocate_queue(queue_size=...)`` where every event counts.
"""


class QueueSizeError(ValueError):
    """A queue was asked for with a size below 1, which cannot hold an event.  A size that
    is not a whole number raises TypeError."""


@dataclass(eq=False)
class EventQueue(Generic[T]):
    """A FIFO of at most ``size`` entries; `put` on a full queue drops the oldest entry.

    Not thread-safe by itself: the scheduler serialises access to it.  Queues compare by
    identity, so one queue can serve several streams.
    """

    size: int = DEFAULT_QUEUE_SIZE
    processed: int = 0
    dropped: int = 0
    _entries: deque[T] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self.size = positive_count(
            "queue_size",
            self.size,
            f"use the default ({DEFAULT_QUEUE_SIZE}) or a larger number",
            too_small=QueueSizeError,
        )

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: T) -> bool:
        """Append ``entry``; return whether the oldest entry was dropped to make room."""
        full = len(self._entries) >= self.size
        if full:
            self._entries.popleft()
            self.dropped += 1
        self._entries.append(entry)
        return full

    def peek(self) -> T:
        """The oldest entry, left in place."""
        return self._entries[0]

    def amend_newest(self, amend: Callable[[T], T | None]) -> bool:
        """Replace the newest entry with ``amend(entry)`` unless the queue is empty or that
        is None; return whether it was replaced.  Counts nothing: no entry came or went."""
        if not self._entries:
            return False
        amended = amend(self._entries[-1])
        if amended is None:
            return False
        self._entries[-1] = amended
        return True

    def take(self) -> T:
        """Remove and return the oldest entry, counting it as processed."""
        entry = self._entries.popleft()
        self.processed += 1
        return entry

    def clear(self) -> int:
        """Drop every waiting entry and return how many there were."""
        count = len(self._entries)
        self._entries.clear()
        self.dropped += count
        return count
