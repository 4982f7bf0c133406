"""Delayed actions of one scheduler, run in due order by a single thread."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

_logger = logging.getLogger("milonga.scheduler")


class DelayedActions:
    """Runs each action ``delay`` seconds after `call_later`, one at a time, on one thread.

    The thread starts with the first action and stops on `close`.  Actions must be quick:
    a slow one delays those due after it.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action()`` in ``delay`` seconds, unless closed before; ignored once closed."""
        with self._changed:
            if self._closed:
                return
            heapq.heappush(self._due, (self._clock() + delay, next(self._order), action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify()

    def pending(self) -> int:
        """How many actions wait for their time."""
        with self._changed:
            return len(self._due)

    def close(self) -> None:
        """Drop the actions not due yet and stop the thread, after the action running."""
        with self._changed:
            self._closed = True
            self._due.clear()
            self._changed.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while (action := self._next_due()) is not None:
            try:
                action()
            except Exception:  # an internal action failing must not stop the others
                _logger.exception("delayed action %r failed", action)

    def _next_due(self) -> Callable[[], None] | None:
        with self._changed:
            while not self._closed:
                if self._due:
                    wait = self._due[0][0] - self._clock()
                    if wait <= 0:
                        return heapq.heappop(self._due)[2]
                    self._changed.wait(wait)
                else:
                    self._changed.wait()
            return None
