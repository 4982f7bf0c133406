"""The process-wide default scheduler, for code that is given none (such as `invoke_lrc`)."""

from __future__ import annotations

import atexit
import threading

from milonga.scheduler.scheduler import CallbackScheduler

DEFAULT_SCHEDULER_THREADS = 2
DEFAULT_SCHEDULER_NAME = "milonga-default"


class _DefaultSlot:
    """Holds the default scheduler; created on first use, again after a shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduler: CallbackScheduler | None = None

    def get(self) -> CallbackScheduler:
        with self._lock:
            if self._scheduler is None or self._scheduler.is_shut_down:
                self._scheduler = CallbackScheduler(
                    thread_count=DEFAULT_SCHEDULER_THREADS, name=DEFAULT_SCHEDULER_NAME
                )
            return self._scheduler

    def shutdown(self) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown()


_slot = _DefaultSlot()


def default_scheduler() -> CallbackScheduler:
    """The process's default `CallbackScheduler` (two worker threads), created on first use.

    After `shutdown_default_scheduler`, or a `shutdown()` of the scheduler itself, the next
    call creates a new one.  It is shut down when the interpreter exits.
    """
    return _slot.get()


def shutdown_default_scheduler() -> None:
    """Shut the default scheduler down, if there is one; callable any number of times."""
    _slot.shutdown()


atexit.register(shutdown_default_scheduler)
