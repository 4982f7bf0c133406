"""Fair choice between queues: the queue that used the workers least recently goes first.

A queue's recent use is the callback time it consumed, decayed exponentially with a
half-life.  Charging time rather than counting events covers both ways a stream hogs the
workers: many cheap events (a flood) and few expensive ones (a slow callback).  A quiet
stream therefore always wins against a busy one, so it waits at most for the callbacks
already running.

Every usage decays by the same factor over the same time, so their order never changes
between charges.  `WorkerUsage.rank` captures that order in a number that does not depend
on the time, which lets the dispatcher keep ready queues in a heap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_HALF_LIFE_SECONDS = 1.0


@dataclass
class _Usage:
    seconds: float
    at: float

    def decayed(self, now: float, half_life: float) -> float:
        return self.seconds * math.pow(0.5, max(0.0, now - self.at) / half_life)


class WorkerUsage(Generic[K]):
    """How much worker time each key used recently, and a rank that orders keys by it."""

    def __init__(self, half_life: float = DEFAULT_HALF_LIFE_SECONDS) -> None:
        if half_life <= 0:
            raise ValueError(f"half_life must be positive, got {half_life}")
        self._half_life = half_life
        self._usage: dict[K, _Usage] = {}

    def usage(self, key: K, now: float) -> float:
        """The decayed worker seconds ``key`` used, as seen at time ``now``."""
        usage = self._usage.get(key)
        return 0.0 if usage is None else usage.decayed(now, self._half_life)

    def charge(self, key: K, seconds: float, now: float) -> None:
        """Record that ``key`` used the workers for ``seconds``, ending at ``now``."""
        usage = self._usage.get(key)
        if usage is None:
            self._usage[key] = _Usage(max(0.0, seconds), now)
        else:
            usage.seconds = usage.decayed(now, self._half_life) + max(0.0, seconds)
            usage.at = now

    def forget(self, key: K) -> None:
        """Drop what is known about ``key``: it is gone for good."""
        self._usage.pop(key, None)

    def rank(self, key: K) -> float:
        """A number that orders keys as their usages do at any one moment: the lower, the
        less used.  It changes only when ``key`` is charged or forgotten."""
        usage = self._usage.get(key)
        if usage is None or usage.seconds <= 0:
            return -math.inf
        # log2(usage at now) == log2(seconds) + at / half_life - now / half_life
        return math.log2(usage.seconds) + usage.at / self._half_life
