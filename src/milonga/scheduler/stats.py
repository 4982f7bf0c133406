"""What each queue of a scheduler did: depth, counts and timing percentiles."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from milonga.scheduler.queues import EventQueue

SAMPLE_WINDOW = 1024
"""How many recent callback runs the timing percentiles are computed from, per queue."""


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank ``fraction`` quantile of ``samples``, or None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


@dataclass
class TimingWindow:
    """The last `SAMPLE_WINDOW` callback durations and queueing delays of one queue."""

    durations: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE_WINDOW))
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE_WINDOW))

    def record(self, delay: float, duration: float) -> None:
        self.delays.append(delay)
        self.durations.append(duration)

    def copy(self) -> TimingWindow:
        return TimingWindow(
            deque(self.durations, maxlen=SAMPLE_WINDOW), deque(self.delays, maxlen=SAMPLE_WINDOW)
        )


@dataclass(frozen=True)
class QueueStats:
    """One queue: the streams it serves, what waits in it and what it did.

    Times are in seconds over the last `SAMPLE_WINDOW` events; None before the first.
    ``queueing_delay`` runs from the Tango callback to the start of the user's callbacks.
    """

    streams: tuple[str, ...]
    size: int
    depth: int
    processed: int
    dropped: int
    callback_p50: float | None
    callback_p99: float | None
    queueing_delay_p50: float | None
    queueing_delay_p99: float | None

    @classmethod
    def of(
        cls, streams: tuple[str, ...], queue: EventQueue[Any], window: TimingWindow
    ) -> QueueStats:
        """The statistics of ``queue``, serving ``streams``, timed by ``window``."""
        durations, delays = list(window.durations), list(window.delays)
        return cls(
            streams,
            queue.size,
            len(queue),
            queue.processed,
            queue.dropped,
            percentile(durations, 0.5),
            percentile(durations, 0.99),
            percentile(delays, 0.5),
            percentile(delays, 0.99),
        )


@dataclass(frozen=True)
class SchedulerStats:
    """Every queue of a scheduler, plus totals over all of them."""

    queues: tuple[QueueStats, ...]

    @property
    def depth(self) -> int:
        return sum(queue.depth for queue in self.queues)

    @property
    def processed(self) -> int:
        return sum(queue.processed for queue in self.queues)

    @property
    def dropped(self) -> int:
        return sum(queue.dropped for queue in self.queues)

    def busiest(self) -> QueueStats | None:
        """The queue whose events waited longest (p99 queueing delay): the one not keeping up."""
        timed = [queue for queue in self.queues if queue.queueing_delay_p99 is not None]
        return max(timed, key=lambda queue: queue.queueing_delay_p99 or 0.0, default=None)
