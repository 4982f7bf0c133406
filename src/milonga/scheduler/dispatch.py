"""Hands queued entries to worker threads: one at a time, fairly, one worker per queue.

A worker takes one entry with `Dispatcher.next`, runs it, and reports with `done`.  Until
then its queue is busy, so the entries of one queue run in order and never at the same
time, however many workers there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from milonga.scheduler.fairness import FairPicker
from milonga.scheduler.queues import EventQueue


class Timestamped(Protocol):
    """An entry that knows when it was queued, on the dispatcher's clock."""

    @property
    def enqueued_at(self) -> float: ...


E = TypeVar("E", bound=Timestamped)


class Dispatcher(Generic[E]):
    """Thread-safe meeting point of the producers that queue entries and the workers."""

    def __init__(
        self,
        picker: FairPicker[EventQueue[E]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._picker: FairPicker[EventQueue[E]] = picker or FairPicker()
        self._clock = clock
        self._ready: dict[EventQueue[E], None] = {}
        self._busy: set[EventQueue[E]] = set()
        self._closed = False
        self._changed = threading.Condition()

    def put(self, queue: EventQueue[E], entry: E) -> bool:
        """Queue ``entry``; return whether an older entry was dropped to make room."""
        with self._changed:
            dropped = queue.put(entry)
            if queue not in self._busy:
                self._ready[queue] = None
            self._changed.notify()
            return dropped

    def next(self) -> tuple[EventQueue[E], E] | None:
        """Block until an entry is ready and return it with its queue; None once closed."""
        with self._changed:
            while not self._closed:
                queue = self._pick()
                if queue is not None:
                    self._busy.add(queue)
                    del self._ready[queue]
                    return queue, queue.take()
                self._changed.wait()
            return None

    def done(self, queue: EventQueue[E], seconds: float) -> None:
        """The worker finished the entry it took from ``queue`` after ``seconds``."""
        with self._changed:
            self._busy.discard(queue)
            self._picker.charge(queue, seconds, self._clock())
            if len(queue):
                self._ready[queue] = None
                self._changed.notify()

    def discard(self, queue: EventQueue[E]) -> int:
        """Drop what ``queue`` holds and forget it; return how many entries it held."""
        with self._changed:
            self._ready.pop(queue, None)
            self._picker.forget(queue)
            return queue.clear()

    def close(self) -> None:
        """Make every `next` call, waiting or future, return None."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _pick(self) -> EventQueue[E] | None:
        oldest_first = sorted(self._ready, key=lambda queue: queue.peek().enqueued_at)
        return self._picker.pick(oldest_first, self._clock())
