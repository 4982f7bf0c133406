"""Hands queued entries to worker threads: one at a time, fairly, one worker per queue.

A worker takes one entry with `Dispatcher.next` and runs it; its next call to `next`
reports the run (or `done` does).  Until then the entry's queue is busy, so the entries
of one queue run in order and never at the same time, however many workers there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from milonga.scheduler.fairness import FairPicker
from milonga.scheduler.queues import EventQueue
from milonga.scheduler.stats import TimingWindow


class Timestamped(Protocol):
    """An entry that knows when it was queued, on the dispatcher's clock."""

    @property
    def enqueued_at(self) -> float: ...


E = TypeVar("E", bound=Timestamped)

Run = tuple[EventQueue[E], float, float]
"""A finished entry: its queue, how long it waited and how long it ran, in seconds."""


class Dispatcher(Generic[E]):
    """Thread-safe meeting point of the producers that queue entries and the workers.

    An idle worker sleeps on a lock of its own, and only a queue becoming ready wakes one,
    after the dispatcher's lock is released: a handoff costs one wake-up.
    """

    def __init__(
        self,
        picker: FairPicker[EventQueue[E]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._picker: FairPicker[EventQueue[E]] = picker or FairPicker()
        self._clock = clock
        self._ready: dict[EventQueue[E], None] = {}
        self._busy: set[EventQueue[E]] = set()
        self._timings: dict[EventQueue[E], TimingWindow] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._idle: list[threading.Lock] = []  # held locks that idle workers wait to acquire

    def put(self, queue: EventQueue[E], entry: E) -> bool:
        """Queue ``entry``; return whether an older entry was dropped to make room."""
        with self._lock:
            dropped = queue.put(entry)
            if queue not in self._busy:
                self._ready[queue] = None
            idle = self._idle_to_wake()
        if idle is not None:
            idle.release()
        return dropped

    def next(self, finished: Run[E] | None = None) -> tuple[EventQueue[E], E] | None:
        """Report ``finished`` if given, then block until an entry is ready and return it
        with its queue; None once closed."""
        while True:
            with self._lock:
                if finished is not None:
                    self._finish(*finished)
                    finished = None
                if self._closed:
                    return None
                queue = self._pick()
                if queue is not None:
                    self._busy.add(queue)
                    del self._ready[queue]
                    job = queue, queue.take()
                    idle = self._idle_to_wake()
                else:
                    wake = threading.Lock()
                    wake.acquire()
                    self._idle.append(wake)
            if queue is None:
                wake.acquire()
                continue
            if idle is not None:
                idle.release()
            return job

    def done(self, queue: EventQueue[E], waited: float, ran: float) -> None:
        """The worker finished an entry of ``queue`` that waited ``waited`` seconds in it and
        ran for ``ran`` seconds."""
        with self._lock:
            self._finish(queue, waited, ran)
            idle = self._idle_to_wake()
        if idle is not None:
            idle.release()

    def timing(self, queue: EventQueue[E]) -> TimingWindow:
        """A copy of the waits and run times recorded for ``queue``'s recent entries."""
        with self._lock:
            return self._timings.get(queue, TimingWindow()).copy()

    def discard(self, queue: EventQueue[E]) -> int:
        """Drop what ``queue`` holds and forget it; return how many entries it held."""
        with self._lock:
            self._ready.pop(queue, None)
            self._timings.pop(queue, None)
            self._picker.forget(queue)
            return queue.clear()

    def close(self) -> None:
        """Make every `next` call, waiting or future, return None."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for wake in idle:
            wake.release()

    def _finish(self, queue: EventQueue[E], waited: float, ran: float) -> None:
        self._busy.discard(queue)
        self._picker.charge(queue, ran, self._clock())
        timing = self._timings.get(queue)
        if timing is None:
            timing = self._timings[queue] = TimingWindow()
        timing.record(waited, ran)
        if len(queue):
            self._ready[queue] = None

    def _idle_to_wake(self) -> threading.Lock | None:
        """An idle worker's lock to release, if a queue is ready for it.  Holds the lock."""
        return self._idle.pop() if self._ready and self._idle else None

    def _pick(self) -> EventQueue[E] | None:
        if len(self._ready) < 2:
            return next(iter(self._ready), None)
        oldest_first = sorted(self._ready, key=lambda queue: queue.peek().enqueued_at)
        return self._picker.pick(oldest_first, self._clock())
