"""Hands queued entries to workers: one at a time, fairly, one worker per queue.

A worker is a thread or an asyncio task.  It takes one entry with `Dispatcher.take` (or,
a thread, with `Dispatcher.next`, which blocks) and runs it; its next call reports the run
(or `done` does).  Until then the entry's queue is busy, so the entries
of one queue run in order and never at the same time, however many workers there are.

Ready queues wait in a heap ordered by their `WorkerUsage.rank`, so choosing one costs
O(log n) however many streams are busy.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from milonga.scheduler.fairness import WorkerUsage
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

    An idle worker leaves a way to wake it (`wait_ready`), and only a queue becoming ready
    wakes one, after the dispatcher's lock is released: a handoff costs one wake-up, and
    entries queued while a worker is awake cost none.
    """

    def __init__(
        self,
        usage: WorkerUsage[EventQueue[E]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._usage: WorkerUsage[EventQueue[E]] = usage or WorkerUsage()
        self._clock = clock
        # A ready queue maps to the serial of its live heap entry; discarded queues leave
        # stale entries behind, which _pick skips.
        self._ready: dict[EventQueue[E], int] = {}
        self._heap: list[tuple[float, float, int, EventQueue[E]]] = []
        self._serials = itertools.count()
        self._busy: set[EventQueue[E]] = set()
        self._discarded_busy: set[EventQueue[E]] = set()  # whose running entry goes unrecorded
        self._timings: dict[EventQueue[E], TimingWindow] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._idle: list[Callable[[], None]] = []  # what wakes each idle worker
        self.on_unwoken_put: Callable[[], None] | None = None
        """Called, outside the lock, after a `put` that woke no worker: a runner's chance
        to notice that its workers are gone for good."""

    def put(self, queue: EventQueue[E], entry: E) -> bool:
        """Queue ``entry``; return whether an older entry was dropped to make room.

        Waking a worker is needed only when the queue was neither busy nor ready: a
        worker already has it, or was woken for it.
        """
        with self._lock:
            dropped = queue.put(entry)
            if self._discarded_busy:
                self._discarded_busy.discard(queue)  # in use again
            idle = None
            if queue not in self._busy and queue not in self._ready:
                self._make_ready(queue)
                idle = self._idle.pop() if self._idle else None
        if idle is not None:
            idle()
        elif self.on_unwoken_put is not None:
            self.on_unwoken_put()
        return dropped

    def amend_newest(self, queue: EventQueue[E], amend: Callable[[E], E | None]) -> bool:
        """`EventQueue.amend_newest` of ``queue``, safe against the workers taking from it."""
        with self._lock:
            return queue.amend_newest(amend)

    def take(self, finished: Run[E] | None = None) -> tuple[EventQueue[E], E] | None:
        """Report ``finished`` if given, then return a ready entry with its queue, marking
        the queue busy; None if no queue is ready or the dispatcher is closed.  Never
        blocks, so an event loop can call it.

        While no other queue is ready, the finished entry's queue, if it has more, is
        served again at once: with nothing to choose from, choosing costs nothing.
        """
        with self._lock:
            if finished is not None:
                served = finished[0]
                more = self._finish(*finished)
                if more and not self._ready and not self._closed:
                    return served, served.take()
                self._busy.discard(served)
                if more:
                    self._make_ready(served)
            if self._closed:
                return None
            queue = self._pick()
            if queue is None:
                return None
            self._busy.add(queue)
            job = queue, queue.take()
            idle = self._idle_to_wake()
        if idle is not None:
            idle()
        return job

    def wait_ready(self, wake: Callable[[], None]) -> bool:
        """Arrange for ``wake`` to be called once, from whichever thread makes a queue
        ready (or closes the dispatcher), and return True; return False without arranging
        anything if a queue is ready already or the dispatcher is closed: `take` again.

        ``wake`` is called outside the dispatcher's lock and must not block.
        """
        with self._lock:
            if self._closed or self._ready:
                return False
            self._idle.append(wake)
            return True

    def next(self, finished: Run[E] | None = None) -> tuple[EventQueue[E], E] | None:
        """Report ``finished`` if given, then block the calling thread until an entry is
        ready and return it with its queue; None once closed."""
        while True:
            job = self.take(finished)
            finished = None
            if job is not None or self._closed:
                return job
            wake = threading.Lock()
            wake.acquire()
            if self.wait_ready(wake.release):
                wake.acquire()

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no entry is handed out any more."""
        return self._closed

    def done(self, queue: EventQueue[E], waited: float, ran: float) -> None:
        """The worker finished an entry of ``queue`` that waited ``waited`` seconds in it and
        ran for ``ran`` seconds."""
        with self._lock:
            self._busy.discard(queue)
            if self._finish(queue, waited, ran):
                self._make_ready(queue)
            idle = self._idle_to_wake()
        if idle is not None:
            idle()

    def timing(self, queue: EventQueue[E]) -> TimingWindow:
        """A copy of the waits and run times recorded for ``queue``'s recent entries."""
        with self._lock:
            return self._timings.get(queue, TimingWindow()).copy()

    def discard(self, queue: EventQueue[E]) -> int:
        """Drop what ``queue`` holds and forget it; return how many entries it held."""
        with self._lock:
            self._ready.pop(queue, None)
            self._timings.pop(queue, None)
            self._usage.forget(queue)
            if queue in self._busy:
                self._discarded_busy.add(queue)
            return queue.clear()

    def close(self) -> None:
        """Make every `next` call, waiting or future, return None."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for wake in idle:
            wake()

    def _finish(self, queue: EventQueue[E], waited: float, ran: float) -> bool:
        """Record the run of an entry of the busy ``queue``; return whether the queue has
        more entries to offer, which a queue discarded meanwhile has not.  The caller
        decides what becomes of the queue's busy mark."""
        if queue in self._discarded_busy:
            self._discarded_busy.discard(queue)
            return False
        self._usage.charge(queue, ran, self._clock())
        timing = self._timings.get(queue)
        if timing is None:
            timing = self._timings[queue] = TimingWindow()
        timing.record(waited, ran)
        return len(queue) > 0

    def _make_ready(self, queue: EventQueue[E]) -> None:
        """Offer ``queue``, which has entries and is neither busy nor ready, to the workers.
        Among equally used queues, the one whose oldest entry was oldest at this moment goes
        first; entries the queue drops later do not change its place."""
        serial = next(self._serials)
        self._ready[queue] = serial
        rank = self._usage.rank(queue)
        heapq.heappush(self._heap, (rank, queue.peek().enqueued_at, serial, queue))

    def _idle_to_wake(self) -> Callable[[], None] | None:
        """What wakes an idle worker, if a queue is ready for it.  Holds the lock."""
        return self._idle.pop() if self._ready and self._idle else None

    def _pick(self) -> EventQueue[E] | None:
        """Remove the least used ready queue from the ready ones and return it."""
        while self._heap:
            _, _, serial, queue = heapq.heappop(self._heap)
            if self._ready.get(queue) == serial:
                del self._ready[queue]
                return queue
        return None
