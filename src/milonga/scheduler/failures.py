"""Logging of callbacks that raise, without flooding the log when one raises at every event."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

REPEAT_INTERVAL_SECONDS = 10.0


@dataclass
class _Failures:
    logged_at: float
    suppressed: int = 0


class CallbackFailureLog:
    """Logs a raising callback with its traceback at once, then at most once per interval.

    Call `report` from inside the ``except`` block, so the traceback is the current one.
    The repeat that is logged says how many failures were left out since the last one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REPEAT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._failures: dict[Hashable, _Failures] = {}

    def report(self, key: Hashable, callback: object) -> bool:
        """Log the exception being handled for ``key`` unless rate-limited; return if logged."""
        now = self._clock()
        failures = self._failures.get(key)
        if failures is not None and now - failures.logged_at < self._interval:
            failures.suppressed += 1
            return False
        left_out = 0 if failures is None else failures.suppressed
        self._failures[key] = _Failures(now)
        extra = f" ({left_out} more failures not logged)" if left_out else ""
        self._logger.exception(
            "event callback %r raised; its worker carries on with the next event%s",
            callback,
            extra,
        )
        return True

    def forget(self, key: Hashable) -> None:
        """Drop what is remembered about ``key``, whose callback is gone."""
        self._failures.pop(key, None)
