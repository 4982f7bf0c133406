"""Statistics of performance samples, as the monitor's tables show them.

Every query empties a process's sample buffers, so one snapshot's samples are those
taken since the previous query, by whichever client made it.  Pure code, no Tango.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from milonga.monitor.snapshot import ClientPerfSample, ServerPerfSample

DECILES_FROM = 10
"""The 10% and 90% columns need at least this many samples."""
PERCENTILES_FROM = 100
"""The 1% and 99% columns need at least this many samples."""

SAMPLE_LIMIT = 256
"""cppTango keeps at most this many samples per side between two queries, dropping the
older ones: a table made of this many samples may miss events."""


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
        p10, p90 = within(_cut(ordered, 1, 10)), within(_cut(ordered, 9, 10))
    if count >= PERCENTILES_FROM:
        p1, p99 = within(_cut(ordered, 1, 100)), within(_cut(ordered, 99, 100))
    mean = statistics.fmean(ordered)
    error = 0.0
    if count > 1:  # in floats: `statistics.stdev` works in exact fractions, 20 times slower
        variance = math.fsum((value - mean) ** 2 for value in ordered) / (count - 1)
        error = math.sqrt(variance / count)
    return Statistics(
        count=count,
        mean=within(mean),
        standard_error=error,
        median=within(statistics.median(ordered)),
        minimum=low,
        maximum=high,
        p1=p1,
        p10=p10,
        p90=p90,
        p99=p99,
    )


def _cut(ordered: Sequence[float], index: int, parts: int) -> float:
    """Cut point ``index`` of ``parts`` of ``ordered`` (at least two values), as
    ``statistics.quantiles(ordered, n=parts)[index - 1]`` gives it (its "exclusive"
    method), without working out the other cut points: a summary needs only the outer
    ones, and polls summarise many tables."""
    last = len(ordered) - 1
    scaled = index * (last + 2)
    lower = min(max(scaled // parts, 1), last)
    delta = scaled - lower * parts
    return (ordered[lower - 1] * (parts - delta) + ordered[lower] * delta) / parts


class Metric(enum.Enum):
    """What a performance row measures; its value is the name the tables show."""

    EVENT_GAPS = "Event Gaps"
    """Time between two events the process pushed (server) or handled (client)."""
    PUSH_TIME = "Push Time"
    """How long handing one event to ZMQ took."""
    SLEEP_TIME = "Sleep Time"
    """How long the event-consumer thread waited for an event."""
    LATENCY = "Latency"
    """From an event's server timestamp to its first callback."""
    CALLBACKS = "Callbacks called"
    """Callbacks run for one event."""
    WAKE_COUNT = "Wake Count"
    """How often the event-consumer thread woke up while waiting for one event."""
    PROCESSING_TIME = "Processing Time"
    """How long handling one event took, every callback included."""

    @property
    def in_micros(self) -> bool:
        """Whether the values are durations in μs; the others are plain counts."""
        return self not in {Metric.CALLBACKS, Metric.WAKE_COUNT}


@dataclass(frozen=True)
class PerfRow:
    """One line of a performance table: the statistics of one metric, for the whole process
    or for the events of one attribute."""

    metric: Metric
    statistics: Statistics
    attribute: str | None = None
    """None for the whole process; otherwise the attribute the events named, as a perf
    sample names it (at most 31 characters), ``""`` for events that named none."""

    @property
    def in_micros(self) -> bool:
        """Durations in μs, shown in μs, ms or s; otherwise plain counts."""
        return self.metric.in_micros


@dataclass(frozen=True)
class PerfTable:
    """The rows of one side's performance table; rows without samples are left out."""

    rows: tuple[PerfRow, ...]
    samples: int
    """How many samples the table was made from, discarded ones included."""
    most_per_query: int | None = None
    """The most samples one query gave, for a table made of several queries' samples;
    None for a table of one query, which gave `samples`."""

    @property
    def full(self) -> bool:
        """Whether the samples of a query filled the process's buffer, so that some may
        have been lost."""
        most = self.samples if self.most_per_query is None else self.most_per_query
        return most >= SAMPLE_LIMIT

    def get(self, metric: Metric, attribute: str | None = None) -> Statistics | None:
        """The statistics of ``metric`` for ``attribute`` (None: the whole process); None
        if the table has no such row."""
        for row in self.rows:
            if row.metric is metric and row.attribute == attribute:
                return row.statistics
        return None


Sample = TypeVar("Sample", ServerPerfSample, ClientPerfSample)


@dataclass(frozen=True)
class SampleBatch(Generic[Sample]):
    """The samples of one side of a process, as one query returned them."""

    samples: Sequence[Sample]
    sampling_just_started: bool = False
    """The first of them is the first since sampling was turned on (see `event_gaps`)."""


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


Candidate = tuple[Metric, str | None, Sequence[float]]


def _table(candidates: Iterable[Candidate], batches: Sequence[SampleBatch[Sample]]) -> PerfTable:
    """The table of the ``candidates`` that have values, made of ``batches``."""
    sizes = [len(batch.samples) for batch in batches]
    return PerfTable(
        rows=tuple(
            PerfRow(metric, summarise(values), attribute)
            for metric, attribute, values in candidates
            if values
        ),
        samples=sum(sizes),
        most_per_query=max(sizes, default=0) if len(sizes) > 1 else None,
    )


def summarise_server_batches(batches: Sequence[SampleBatch[ServerPerfSample]]) -> PerfTable:
    """The server table of one or more queries' samples: the gaps between pushed events
    (each batch's first gap left out if sampling had just started, see `event_gaps`) and
    how long each push took."""
    gaps: list[float] = []
    pushes: list[float] = []
    for batch in batches:
        gaps += event_gaps(batch.samples, batch.samples, batch.sampling_just_started)
        pushes += [s.push_event_micros for s in batch.samples]
    return _table([(Metric.EVENT_GAPS, None, gaps), (Metric.PUSH_TIME, None, pushes)], batches)


def summarise_client_batches(batches: Sequence[SampleBatch[ClientPerfSample]]) -> PerfTable:
    """The client table of one or more queries' samples.

    Discarded events were dropped without being handled, so they are left out of the
    timing rows (gaps, sleep, latency, processing) and of `Metric.CALLBACKS`; the
    consumer thread still woke up for them, so `Metric.WAKE_COUNT` counts every sample.
    Each batch's first gap is left out if sampling had just started, as on the server
    side.  Besides the rows of the whole process, `Metric.PROCESSING_TIME` and
    `Metric.LATENCY` have a row per attribute, in the order of the attributes' names.
    """
    gaps: list[float] = []
    handled: list[ClientPerfSample] = []
    wakes: list[float] = []
    for batch in batches:
        mine = [s for s in batch.samples if not s.discarded]
        gaps += event_gaps(batch.samples, mine, batch.sampling_just_started)
        handled += mine
        wakes += [s.wake_count for s in batch.samples]
    latencies: dict[str, list[float]] = {}
    processing: dict[str, list[float]] = {}
    for sample in handled:
        processing.setdefault(sample.attr_name, []).append(sample.process_micros)
        if sample.first_callback_latency_micros is not None:
            latencies.setdefault(sample.attr_name, []).append(sample.first_callback_latency_micros)
    candidates: list[Candidate] = [
        (Metric.EVENT_GAPS, None, gaps),
        (Metric.SLEEP_TIME, None, [s.sleep_micros for s in handled]),
        (Metric.LATENCY, None, [value for values in latencies.values() for value in values]),
        (Metric.CALLBACKS, None, [s.callback_count for s in handled]),
        (Metric.WAKE_COUNT, None, wakes),
    ]
    candidates += [(Metric.PROCESSING_TIME, a, v) for a, v in sorted(processing.items())]
    candidates += [(Metric.LATENCY, a, v) for a, v in sorted(latencies.items())]
    return _table(candidates, batches)


def summarise_server_perf(
    samples: Sequence[ServerPerfSample], *, sampling_just_started: bool = False
) -> PerfTable:
    """The server table of one query's ``samples`` (see `summarise_server_batches`)."""
    return summarise_server_batches([SampleBatch(samples, sampling_just_started)])


def summarise_client_perf(
    samples: Sequence[ClientPerfSample], *, sampling_just_started: bool = False
) -> PerfTable:
    """The client table of one query's ``samples`` (see `summarise_client_batches`)."""
    return summarise_client_batches([SampleBatch(samples, sampling_just_started)])


_UNITS = (("s", 1_000_000.0), ("ms", 1_000.0), ("μs", 1.0))


def time_unit(micros: float) -> tuple[str, float]:
    """The unit to show a duration of about ``micros`` μs in, and μs per that unit.

    The largest of s, ms and μs in which the value is at least 1.
    """
    for name, size in _UNITS:
        if abs(micros) >= size:
            return name, size
    return _UNITS[-1]


def duration(micros: float) -> str:
    """``micros`` in the largest of s, ms and μs in which it is at least 1, rounded to three
    significant figures for a sentence (``301 ms``, ``26.2 s``).

    The monitor's table cells (`milonga.monitor.render.table_number`) differ on purpose:
    they never drop below two decimals, and a row shares one unit, so a cell shows at
    least three significant figures and often more (``301.23``).
    """
    unit, size = time_unit(micros)
    value = micros / size
    for digits in (2, 1):  # three significant figures, as far as the value allows
        if round(value, digits) < 10 ** (3 - digits):
            return f"{value:.{digits}f} {unit}"
    return f"{value:.0f} {unit}"
