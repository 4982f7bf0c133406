"""Statistics of performance samples, as the monitor's tables show them.

Every query empties a process's sample buffers, so one snapshot's samples are those
taken since the previous query, by whichever client made it.  Pure code, no Tango.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from milonga.monitor.snapshot import ClientPerfSample, ServerPerfSample

DECILES_FROM = 10
"""The 10% and 90% columns need at least this many samples."""
PERCENTILES_FROM = 100
"""The 1% and 99% columns need at least this many samples."""

SAMPLE_LIMIT = 256
"""cppTango keeps at most this many samples per side between two queries, dropping the
older ones: a table made of this many samples may miss events."""

NO_ATTRIBUTE = "(no attribute)"
"""The processing-time row of events that name no attribute."""


@dataclass(frozen=True)
class Statistics:
    """A summary of a non-empty list of numbers, in their own unit."""

    count: int
    mean: float
    standard_error: float
    """The sample standard deviation over the square root of the count; 0 for one value."""
    median: float
    minimum: float
    maximum: float
    p1: float | None
    """None below `PERCENTILES_FROM` values, like `p99`."""
    p10: float | None
    """None below `DECILES_FROM` values, like `p90`."""
    p90: float | None
    p99: float | None


def summarise(values: Sequence[float]) -> Statistics:
    """Summarise ``values``; raises ValueError if there are none.

    Percentiles interpolate between neighbouring values (`statistics.quantiles`, its
    default "exclusive" method), so integer samples can give fractional percentiles.
    """
    if not values:
        raise ValueError("cannot summarise no values")
    ordered = sorted(values)
    count = len(ordered)
    low, high = ordered[0], ordered[-1]

    def within(value: float) -> float:
        # Guard the interpolation's rounding: a percentile never leaves the data's range.
        return min(max(value, low), high)

    p1 = p10 = p90 = p99 = None
    if count >= DECILES_FROM:
        deciles = statistics.quantiles(ordered, n=10)
        p10, p90 = within(deciles[0]), within(deciles[-1])
    if count >= PERCENTILES_FROM:
        percentiles = statistics.quantiles(ordered, n=100)
        p1, p99 = within(percentiles[0]), within(percentiles[-1])
    error = statistics.stdev(ordered) / math.sqrt(count) if count > 1 else 0.0
    return Statistics(
        count=count,
        mean=within(statistics.fmean(ordered)),
        standard_error=error,
        median=within(statistics.median(ordered)),
        minimum=low,
        maximum=high,
        p1=p1,
        p10=p10,
        p90=p90,
        p99=p99,
    )


@dataclass(frozen=True)
class PerfRow:
    """One line of a performance table."""

    name: str
    statistics: Statistics
    in_micros: bool
    """Durations in microseconds, shown in μs, ms or s; otherwise plain counts."""


@dataclass(frozen=True)
class PerfTable:
    """The rows of one side's performance table; rows without samples are left out."""

    rows: tuple[PerfRow, ...]
    samples: int
    """How many samples the table was made from, discarded ones included."""

    @property
    def full(self) -> bool:
        """Whether the samples filled the process's buffer, so that some may have been lost."""
        return self.samples >= SAMPLE_LIMIT


def _rows(candidates: Iterable[tuple[str, Sequence[float], bool]]) -> tuple[PerfRow, ...]:
    return tuple(
        PerfRow(name, summarise(values), in_micros)
        for name, values, in_micros in candidates
        if values
    )


def event_gaps(
    samples: Sequence[ServerPerfSample | ClientPerfSample],
    counted: Iterable[ServerPerfSample | ClientPerfSample],
    sampling_just_started: bool,
) -> list[float]:
    """The known gaps of the ``counted`` samples, in μs: the `Event Gaps` of one query's
    ``samples`` (``counted`` is those of them that count, all or a subset).

    With ``sampling_just_started``, the first of ``samples`` is the first one taken since
    sampling was turned on: cppTango measures its gap from the last event it sampled
    before sampling was off, so that gap is no time between two events and is left out.
    `milonga.monitor.Unsampled` tells, poll after poll, when that is the case.
    """
    first = samples[0] if sampling_just_started and samples else None
    return [
        s.micros_since_last_event
        for s in counted
        if s.micros_since_last_event is not None and s is not first
    ]


def summarise_server_perf(
    samples: Sequence[ServerPerfSample], *, sampling_just_started: bool = False
) -> PerfTable:
    """The server table: the gaps between pushed events and how long each push took.

    ``sampling_just_started``: the first sample is the first since sampling was turned
    on, and its gap is left out (see `event_gaps`).
    """
    gaps = event_gaps(samples, samples, sampling_just_started)
    pushes = [s.push_event_micros for s in samples]
    return PerfTable(
        rows=_rows([("Event Gaps", gaps, True), ("Push Time", pushes, True)]),
        samples=len(samples),
    )


def summarise_client_perf(
    samples: Sequence[ClientPerfSample], *, sampling_just_started: bool = False
) -> PerfTable:
    """The client table.

    Discarded events were dropped without being handled, so they are left out of the
    timing rows (gaps, sleep, latency, processing) and of `Callbacks called`; the
    consumer thread still woke up for them, so `Wake Count` counts every sample.
    ``sampling_just_started`` leaves the first sample's gap out, as on the server side.
    """
    handled = [s for s in samples if not s.discarded]
    by_attribute: dict[str, list[float]] = {}
    for sample in handled:
        by_attribute.setdefault(sample.attr_name or NO_ATTRIBUTE, []).append(sample.process_micros)
    candidates: list[tuple[str, Sequence[float], bool]] = [
        ("Event Gaps", event_gaps(samples, handled, sampling_just_started), True),
        ("Sleep Time", [s.sleep_micros for s in handled], True),
        (
            "Latency",
            [
                s.first_callback_latency_micros
                for s in handled
                if s.first_callback_latency_micros is not None
            ],
            True,
        ),
        ("Callbacks called", [s.callback_count for s in handled], False),
        ("Wake Count", [s.wake_count for s in samples], False),
    ]
    candidates.extend(
        (f"{attribute} Processing Time", times, True)
        for attribute, times in sorted(by_attribute.items())
    )
    return PerfTable(rows=_rows(candidates), samples=len(samples))


_UNITS = (("s", 1_000_000.0), ("ms", 1_000.0), ("μs", 1.0))


def time_unit(micros: float) -> tuple[str, float]:
    """The unit to show a duration of about ``micros`` μs in, and μs per that unit.

    The largest of s, ms and μs in which the value is at least 1.
    """
    for name, size in _UNITS:
        if abs(micros) >= size:
            return name, size
    return _UNITS[-1]
