"""Logging of callbacks that raise, without flooding the log when one raises at every event.

One rate limiter for every callback milonga runs: the scheduler's event callbacks and
`milonga.lrc`'s ``lrc_callback`` both report their failures through `CallbackFailureLog`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

REPEAT_INTERVAL_SECONDS = 10.0


@dataclass
class _Failures:
    logged_at: float
    names: tuple[object, ...]  # what fills the callback's description, from the last failure
    suppressed: int = 0


class CallbackFailureLog:
    """Logs a raising callback with its traceback at once, then at most once per interval.

    Each callback has a key of its own, and its own allowance.  Call `report` from inside
    the ``except`` block, so the traceback is the current one.  A repeat that is logged
    says how many failures were left out since the last one, and so does `forget`, when
    the callback is gone: every failure is logged or counted.

    ``describe`` names the callback in each message: a %-format that `report`'s ``names``
    fill in.  ``carry_on`` says what happens after a failure.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REPEAT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        *,
        describe: str = "event callback %r",
        carry_on: str = "its worker carries on with the next event",
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._describe = describe
        self._carry_on = carry_on
        self._lock = threading.Lock()  # workers report while another thread forgets
        self._failures: dict[Hashable, _Failures] = {}

    def report(self, key: Hashable, *names: object) -> bool:
        """Log the exception being handled for ``key`` unless rate-limited; return if logged.

        ``names`` fill in the ``describe`` format given to the constructor.
        """
        now = self._clock()
        with self._lock:
            failures = self._failures.get(key)
            if failures is not None and now - failures.logged_at < self._interval:
                failures.suppressed += 1
                failures.names = names
                return False
            left_out = 0 if failures is None else failures.suppressed
            self._failures[key] = _Failures(now, names)
        extra = f" ({left_out} more failures not logged)" if left_out else ""
        self._logger.exception(f"{self._describe} raised; {self._carry_on}%s", *names, extra)
        return True

    def forget(self, key: Hashable) -> None:
        """Drop what is remembered about ``key``, whose callback was unregistered, first
        logging how many of its failures were left out since the last one logged, if any."""
        with self._lock:
            failures = self._failures.pop(key, None)
        if failures is not None and failures.suppressed:
            self._logger.error(
                f"{self._describe} was unregistered (%d more failures not logged)",
                *failures.names,
                failures.suppressed,
            )
