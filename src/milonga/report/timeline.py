"""What a report draws: a recording's figures against time, gathered one poll at a time.

`Timeline.add` takes the `PollUpdate` of each poll, as `milonga.monitor.analysis.Analysis`
makes it, and keeps only series of numbers (`Series`, in ``array('d')``) per server, the
spans in which a server did not answer, its restarts, and the runs of polls in which each
finding held (`Episode`): no poll is kept, so that a day of polls fits in a few tens of MB.
Every figure is one the monitor already works out; nothing here judges anew.
`envelope` reduces a long series to what a plot of a given width can show.  Pure code:
no Tango, no plotting.

Times are POSIX seconds; durations in series values are seconds too.  A run of polls
(a span without an answer, an episode of a finding) lasts from the first poll of the run
to the poll that ends it, or to the last poll of the recording if none does: its
duration is ``end - start`` whatever the kind of run.
"""

from __future__ import annotations

import bisect
import math
import statistics
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import NamedTuple

from milonga.monitor.analysis import PollUpdate
from milonga.monitor.diff import Report
from milonga.monitor.figures import (
    MICROS_PER_SECOND,
    StreamFigures,
    interval_seconds,
    timings_by_attribute,
)
from milonga.monitor.findings import Finding, Severity, Subject, shared_of, subject_stream
from milonga.monitor.poll import ServerEntry
from milonga.monitor.snapshot import ClientSide, short_name
from milonga.monitor.stats import Metric, PerfTable

NAN = math.nan
RESTARTED = "server-restarted"
"""The finding kind whose polls are a server's restarts."""


class Series:
    """One quantity against time; NaN where it is not known, so that a line breaks there.

    A value equal to the two before it moves the last point forward in time instead of
    adding one: a flat stretch is kept as its two ends, which draws the same line, so an
    idle counter costs two points however long the recording.  Times only grow.
    """

    __slots__ = ("_last", "_still", "times", "values")

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("d")
        self._last: float | None = None
        """The value of the last point; None before the first."""
        self._still: float | None = None
        """The value of the last two points when it is the same (NaN and NaN count as the
        same), else None: the value whose next repeat only moves the last time."""

    def append(self, time: float, value: float) -> None:
        """Add ``value`` at ``time``, which is later than every time already in."""
        still = self._still
        if value == still or (value != value and still != still):  # noqa: PLR0124 (NaN)
            self.times[-1] = time
            return
        last = self._last
        if value == last or (value != value and last != last):  # noqa: PLR0124 (NaN)
            self._still = value
        else:
            self._last = value
            self._still = None
        self.times.append(time)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Series({len(self)} points)"


class Span(NamedTuple):
    """A stretch of time, in POSIX seconds."""

    start: float
    end: float


class Episode(NamedTuple):
    """One run of consecutive polls at which one finding (kind and subject) held."""

    kind: str
    subject: Subject
    severity: Severity
    """The worst it reached."""
    start: float
    """The first poll at which it held."""
    end: float
    """The first poll after ``start`` at which it no longer held; the last poll of the
    recording if it held until then."""
    polls: int
    """The polls at which it held."""
    message: str
    """Its message at the latest of its worst polls."""
    ongoing: bool
    """Whether it still held at the last poll of the recording."""


SeriesMap = dict[str, Series]


class _Rows:
    """The series of each name of one side of a server (its streams, its topics), found
    once for as long as the names stay those of the server's previous answer."""

    def __init__(self) -> None:
        self._keys: frozenset[str] = frozenset()
        self._rows: dict[str, tuple[Series, ...]] = {}

    def of(
        self,
        time: float,
        keys: AbstractSet[str],
        names_of: Callable[[Collection[str]], Mapping[str, str]],
        *groups: SeriesMap,
    ) -> Mapping[str, tuple[Series, ...]]:
        """The series of ``groups`` of each of ``keys``, by key; ``names_of`` names the
        series of each key.  When the keys change, the series of ``groups`` that no key
        names any more get NaN at ``time``: their lines break there."""
        if self._keys != keys:
            names = names_of(keys)
            self._rows = {
                key: tuple(_series(group, name) for group in groups) for key, name in names.items()
            }
            self._keys = frozenset(keys)
            _gaps(time, names.values(), *groups)
        return self._rows


@dataclass
class ServerTimeline:
    """The figures of one monitored server, at each poll.

    Every series of the server gets NaN at a poll it did not answer, and a stream's or
    attribute's series gets NaN at an answer that no longer has it: lines break there.
    Counters are as the server reports them; rates are the move of a counter over the
    interval since the server's previous answer, NaN where that move is not known (a
    first answer, a stream new since, a counter that went down as at a restart, an
    interval the clock cannot tell).
    """

    admin: str
    polls: int = 0
    """Polls that asked it."""
    answers: int = 0
    """Polls it answered."""
    silent: list[Span] = field(default_factory=list)
    """Runs of polls it did not answer: from the first such poll to the poll at which it
    answered again, or to the last poll of the recording (as an `Episode` lasts)."""
    restarts: list[float] = field(default_factory=list)
    """Polls at which the monitor found it restarted (the ``server-restarted`` finding)."""
    pushed: SeriesMap = field(default_factory=dict)
    """Publisher side, by stream (``device/attribute.kind``): the last pushed counter."""
    push_rate: SeriesMap = field(default_factory=dict)
    """By stream: events pushed per second."""
    received: SeriesMap = field(default_factory=dict)
    """Subscriber side, by stream as findings name it (`subject_stream`): the server
    counter of the last event received."""
    received_rate: SeriesMap = field(default_factory=dict)
    """By stream: events the subscription received per second (its event count)."""
    publisher_pushed: SeriesMap = field(default_factory=dict)
    """By stream whose publisher is monitored: the publisher's last pushed counter, as
    paired with `received` at the polls at which both answered (`StreamFigures.counters`)."""
    backlog: SeriesMap = field(default_factory=dict)
    """By stream whose publisher is monitored: events pushed not yet received
    (`StreamFigures.lag`)."""
    latency_median: SeriesMap = field(default_factory=dict)
    """By attribute (as perf samples name it, in lower case): seconds from push to first
    callback, at answers with client samples."""
    latency_max: SeriesMap = field(default_factory=dict)
    processing_median: SeriesMap = field(default_factory=dict)
    """By attribute: seconds handling one event took."""
    processing_max: SeriesMap = field(default_factory=dict)
    push_gap_median: Series = field(default_factory=Series)
    """Seconds between two sampled pushes (server side)."""
    event_gap_median: Series = field(default_factory=Series)
    """Seconds between two sampled events handled (client side)."""
    missed: SeriesMap = field(default_factory=dict)
    """By stream: missed events, counted since the subscription began."""
    discarded: SeriesMap = field(default_factory=dict)
    callbacks: SeriesMap = field(default_factory=dict)
    not_connected: Series = field(default_factory=Series)
    """Subscriptions it was still trying to connect."""
    _silent_since: float | None = field(default=None, repr=False)
    _published: _Rows = field(default_factory=_Rows, repr=False)
    _subscribed: _Rows = field(default_factory=_Rows, repr=False)
    _paired: _Rows = field(default_factory=_Rows, repr=False)

    @property
    def is_publisher(self) -> bool:
        """Whether it published a stream at some answer."""
        return bool(self.pushed)

    @property
    def is_subscriber(self) -> bool:
        """Whether it subscribed to a stream, or tried to, at some answer."""
        return bool(self.received) or any(value > 0 for value in self.not_connected.values)

    @property
    def has_samples(self) -> bool:
        """Whether some answer carried performance samples."""
        return bool(self.latency_median or self.processing_median) or any(
            not math.isnan(value)
            for series in (self.push_gap_median, self.event_gap_median)
            for value in series.values
        )

    def _series(self) -> Iterable[Series]:
        """Every series of the server."""
        for group in self._groups():
            yield from group.values()
        yield self.push_gap_median
        yield self.event_gap_median
        yield self.not_connected

    def _groups(self) -> tuple[SeriesMap, ...]:
        return (
            self.pushed,
            self.push_rate,
            self.received,
            self.received_rate,
            self.publisher_pushed,
            self.backlog,
            self.latency_median,
            self.latency_max,
            self.processing_median,
            self.processing_max,
            self.missed,
            self.discarded,
            self.callbacks,
        )

    def _add(
        self,
        when: datetime,
        entry: ServerEntry,
        streams: Sequence[StreamFigures],
        restarted: bool,
    ) -> None:
        """Add its entry of the poll at ``when``; ``streams`` are those it subscribes to,
        and ``restarted`` whether the monitor found it restarted."""
        time = when.timestamp()
        self.polls += 1
        if entry.report is None or entry.snapshot is None:
            if self._silent_since is None:
                self._silent_since = time
            for series in self._series():
                series.append(time, NAN)
            return
        self.answers += 1
        self._end_silence(time)
        if restarted:
            self.restarts.append(time)
        seconds = interval_seconds(when, entry.last_answer)
        snapshot = entry.snapshot
        if snapshot.server is not None:
            self._publisher(time, seconds, snapshot.server.publishers, entry.report)
        self._subscriber(time, seconds, snapshot.client, entry.report)
        self._pairs(time, streams)
        self._timings(time, entry.report)

    def _end_silence(self, time: float) -> None:
        """Close the span of silence still open, if any, at ``time``: the poll at which
        it answered again, or the last poll of the recording."""
        if self._silent_since is not None:
            self.silent.append(Span(self._silent_since, time))
            self._silent_since = None

    def _publisher(
        self, time: float, seconds: float | None, counters: Mapping[str, int], report: Report
    ) -> None:
        moved = {change.stream: change.counter.delta for change in report.published}
        new = {publisher.stream for publisher in report.new_publishers}
        rows = self._published.of(time, counters.keys(), _short_names, self.pushed, self.push_rate)
        for stream, counter in counters.items():
            pushed, rate = rows[stream]
            pushed.append(time, counter)
            delta = None if stream in new else moved.get(stream, 0)
            rate.append(time, _rate(delta, seconds))

    def _subscriber(
        self, time: float, seconds: float | None, client: ClientSide | None, report: Report
    ) -> None:
        subscriptions = client.subscriptions if client is not None else {}
        self.not_connected.append(time, len(client.not_connected) if client else 0)
        if not subscriptions and not self.received:
            return  # the usual case of a pure publisher, quickly
        moved = {
            change.topic: change.event_count.delta
            for change in report.subscription_changes
            if change.event_count is not None
        }
        new = {subscription.topic for subscription in report.new_subscriptions}
        rows = self._subscribed.of(
            time,
            subscriptions.keys(),
            _stream_names,
            self.received,
            self.received_rate,
            self.missed,
            self.discarded,
            self.callbacks,
        )
        for topic, subscription in subscriptions.items():
            received, rate, missed, discarded, callbacks = rows[topic]
            received.append(time, subscription.server_counter)
            delta = None if topic in new else moved.get(topic, 0)
            rate.append(time, _rate(delta, seconds))
            missed.append(time, subscription.missed_event_count)
            discarded.append(time, subscription.discarded_event_count)
            callbacks.append(time, subscription.callback_count)

    def _pairs(self, time: float, streams: Sequence[StreamFigures]) -> None:
        """Add the pushed counter and backlog of each of ``streams`` it subscribes to;
        series new at a poll are made in the order of their names."""
        if not streams and not self.backlog:
            return
        names = {stream.name for stream in streams}
        rows = self._paired.of(time, names, _sorted_names, self.publisher_pushed, self.backlog)
        for stream in streams:
            pushed, backlog = rows[stream.name]
            counters, lag = stream.counters, stream.lag
            pushed.append(time, NAN if counters is None else counters[0])
            backlog.append(time, NAN if lag is None else lag)

    def _timings(self, time: float, report: Report) -> None:
        """Add the latencies, processing times and gaps of its samples at this answer."""
        client, server = report.client_perf, report.server_perf
        self.push_gap_median.append(time, _gap(server))
        self.event_gap_median.append(time, _gap(client))
        if client is None and not self.latency_median and not self.processing_median:
            return
        timings = timings_by_attribute(client) if client is not None else None
        for name, group, tops in (
            ("latency", self.latency_median, self.latency_max),
            ("processing", self.processing_median, self.processing_max),
        ):
            rows = {} if timings is None else getattr(timings, name)
            named = [a for a in rows if a] if "" in rows else rows.keys()  # "": naming none
            for attribute in named:
                figures = rows[attribute]
                _series(group, attribute).append(time, figures.median / MICROS_PER_SECOND)
                _series(tops, attribute).append(time, figures.maximum / MICROS_PER_SECOND)
            _gaps(time, named, group, tops)


def _short_names(streams: Collection[str]) -> dict[str, str]:
    """A publisher's streams by their short names (`short_name`)."""
    return {stream: short_name(stream) for stream in streams}


def _stream_names(topics: Collection[str]) -> dict[str, str]:
    """A subscriber's topics by their names as findings name them (`subject_stream`)."""
    shared = shared_of(tuple(topics)) if len(topics) > 1 else frozenset()
    return {topic: subject_stream(topic, shared) for topic in topics}


def _sorted_names(names: Collection[str]) -> dict[str, str]:
    """Each of ``names`` as itself, sorted: an order that does not depend on how a set
    of them iterates (which differs between processes)."""
    return {name: name for name in sorted(names)}


def _series(group: SeriesMap, name: str) -> Series:
    """The series ``name`` of ``group``, made empty if it is not there yet."""
    series = group.get(name)
    if series is None:
        series = group[name] = Series()
    return series


def _gaps(time: float, present: Iterable[str], *groups: SeriesMap) -> None:
    """Put NaN at ``time`` in the series of ``groups`` not named in ``present``."""
    names = present if isinstance(present, AbstractSet) else set(present)
    for group in groups:
        if len(group) != len(names):
            for name, series in group.items():
                if name not in names:
                    series.append(time, NAN)


def _rate(delta: int | None, seconds: float | None) -> float:
    """Events per second for a counter that moved ``delta`` in ``seconds``; NaN when
    either is unknown or the counter went down."""
    if delta is None or seconds is None or delta < 0:
        return NAN
    return delta / seconds


def _gap(table: PerfTable | None) -> float:
    """The median event gap of a whole side's table, in seconds; NaN without one."""
    figures = None if table is None else table.get(Metric.EVENT_GAPS)
    return NAN if figures is None else figures.median / MICROS_PER_SECOND


@dataclass
class _Held:
    """An episode under way."""

    finding: Finding
    start: float
    polls: int = 1

    def episode(self, end: float, ongoing: bool) -> Episode:
        """The episode, ended at ``end``."""
        finding = self.finding
        return Episode(
            finding.kind,
            finding.subject,
            finding.severity,
            self.start,
            end,
            self.polls,
            finding.message,
            ongoing,
        )


class Timeline:
    """The figures of a recording, from its polls' updates given oldest first.

    An update whose time is not later than that of the last one taken in (a clock set
    back, a line moved) is left out, so that every series, span and episode goes forward
    in time; `milonga.monitor.jsonl.iter_polls` tells each such poll.  Call `finish`
    once after the last `add`: it closes the episodes and silent spans still open.  Not
    thread-safe.
    """

    def __init__(self) -> None:
        self.polls = 0
        """The polls taken in."""
        self.start: float | None = None
        """The first poll, in POSIX seconds."""
        self.end: float | None = None
        """The last poll."""
        self.tz: tzinfo | None = None
        """The UTC offset of the first poll: times read as the recording's local time."""
        self.servers: dict[str, ServerTimeline] = {}
        """By admin device, in the order first seen."""
        self.episodes: list[Episode] = []
        """Closed episodes; after `finish`, all of them, ordered by start."""
        self._intervals = array("d")
        self._held: dict[tuple[str, Subject], _Held] = {}

    @property
    def period(self) -> float | None:
        """The median interval between two polls, in seconds; None below two polls."""
        return statistics.median(self._intervals) if self._intervals else None

    def add(self, update: PollUpdate) -> None:
        """Add the figures and findings of one poll, unless it is not later than the
        last poll added."""
        when = update.report.time
        time = when.timestamp()
        if self.end is not None:
            if time <= self.end:
                return
            self._intervals.append(time - self.end)
        else:
            self.start, self.tz = time, when.tzinfo
        self.polls += 1
        self.end = time
        active = update.findings.active
        restarted = {f.subject.server for f in active if f.kind == RESTARTED}
        streams: dict[str, list[StreamFigures]] = {}
        for stream in update.streams:
            streams.setdefault(stream.subscriber, []).append(stream)
        for entry in update.report.entries:
            admin = entry.server.admin
            server = self.servers.get(admin)
            if server is None:
                server = self.servers[admin] = ServerTimeline(admin)
            server._add(when, entry, streams.get(admin, ()), admin in restarted)
        self._episodes(time, active)

    def _episodes(self, time: float, active: Sequence[Finding]) -> None:
        """Carry on the episodes of the ``active`` findings at ``time``, start new ones
        and close those that no longer hold."""
        held, self._held = self._held, {}
        for finding in active:
            before = held.pop(finding.key, None)
            if before is None:
                self._held[finding.key] = _Held(finding, time)
                continue
            before.polls += 1
            if finding.severity >= before.finding.severity:
                before.finding = finding  # the worst so far, and the latest of those
            self._held[finding.key] = before
        self.episodes.extend(episode.episode(time, ongoing=False) for episode in held.values())

    def finish(self) -> None:
        """Close the episodes and silent spans still open at the last poll, and order
        the episodes by start."""
        if self.end is not None:
            end = self.end
            self.episodes.extend(held.episode(end, ongoing=True) for held in self._held.values())
            for server in self.servers.values():
                server._end_silence(end)
        self._held = {}
        self.episodes.sort(key=lambda e: (e.start, e.subject, e.kind))


def envelope(
    times: Sequence[float], values: Sequence[float], buckets: int
) -> tuple[array[float], array[float]]:
    """A series reduced for a plot ``buckets`` pixels wide: its points, at most two per
    bucket plus NaN breaks.

    Time, from the first to the last of ``times`` (which only grow), is cut into
    ``buckets`` equal buckets; each keeps the points of its least and greatest value
    (NaN left aside), in time order, so that spikes survive.  Where the series has a NaN
    between two points kept, the first such NaN is kept too, so that a line drawn
    through the result breaks where the series does.  A series of at most ``2 *
    buckets`` points is returned whole.  The result has at most ``4 * buckets`` points,
    and ``2 * buckets`` without NaN.  Raises ValueError if ``buckets`` is below 1 or the
    lengths differ.
    """
    if buckets < 1:
        raise ValueError(f"an envelope needs at least 1 bucket, got {buckets}")
    if len(times) != len(values):
        raise ValueError(
            f"an envelope needs as many times as values, got {len(times)} and {len(values)}"
        )
    count = len(values)
    if count <= 2 * buckets:
        return array("d", times), array("d", values)
    kept = _extremes(times, values, buckets)
    gaps = [index for index, value in enumerate(values) if math.isnan(value)]
    out_times, out_values = array("d"), array("d")
    previous: int | None = None
    for index in kept:
        if previous is not None and gaps:
            nan = bisect.bisect_right(gaps, previous)
            if nan < len(gaps) and gaps[nan] < index:
                out_times.append(times[gaps[nan]])
                out_values.append(NAN)
        out_times.append(times[index])
        out_values.append(values[index])
        previous = index
    return out_times, out_values


def bucket_of(time: float, first: float, last: float, buckets: int) -> int:
    """The bucket of ``time`` when ``first`` .. ``last`` is cut into ``buckets``."""
    if last <= first:
        return 0
    return min(buckets - 1, int((time - first) / (last - first) * buckets))


def _extremes(times: Sequence[float], values: Sequence[float], buckets: int) -> list[int]:
    """The indices of each bucket's least and greatest value (`envelope`), in order."""
    first, last = times[0], times[-1]
    low: list[int | None] = [None] * buckets
    high: list[int | None] = [None] * buckets
    for index, value in enumerate(values):
        if math.isnan(value):
            continue
        bucket = bucket_of(times[index], first, last, buckets)
        least, most = low[bucket], high[bucket]
        if least is None or value < values[least]:
            low[bucket] = index
        if most is None or value > values[most]:
            high[bucket] = index
    kept: list[int] = []
    for least, most in zip(low, high, strict=True):
        if least is not None and most is not None:
            kept.extend(sorted({least, most}))
    return kept


__all__ = [
    "Episode",
    "Series",
    "ServerTimeline",
    "Span",
    "Timeline",
    "bucket_of",
    "envelope",
]
