"""What the demo concludes from the monitor's polls: which stream cannot keep up, the rates,
the latency, and whether events were lost or only late.

Every figure comes from the polls: the publishers' server counters and event gaps, the
subscribers' counters, processing times and latencies.  Pure code, no Tango.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from milonga.monitor import (
    ClientPerfSample,
    Poll,
    ServerPerfSample,
    Snapshot,
    Statistics,
    Subscription,
    summarise,
)
from milonga.monitor.snapshot import short_name
from milonga.monitor.stats import time_unit

_TOPIC_KIND = re.compile(r"^idl\d+_")
MICROS_PER_SECOND = 1_000_000.0
WIDTH = 100


@dataclass(frozen=True)
class StreamFigures:
    """One event stream from a monitored publisher to a monitored subscriber process."""

    name: str
    """``device/attribute.kind``, as the publisher names the stream."""
    publisher: str
    """The publisher's admin device."""
    subscriber: str
    """The subscriber's admin device."""
    pushed: int
    """Events pushed on the stream between the first and the last poll: how far the
    publisher's server counter moved."""
    received: int
    """How far the subscriber's last received server counter moved in that time."""
    missed: int
    """Missed events the subscriber detected between the first and the last poll."""
    push_gaps: Statistics | None
    """Time between two events pushed by the publisher's process, in μs."""
    processing: Statistics | None
    """Time the subscriber's consumer thread spent handling one event of it, in μs."""
    latency: Statistics | None
    """Time from push to first callback in the subscriber, in μs."""

    @property
    def too_slow(self) -> bool:
        """Whether handling one event takes longer than the publisher takes to push one."""
        if self.processing is None or self.push_gaps is None:
            return False
        return self.processing.median > self.push_gaps.median

    @property
    def behind(self) -> int:
        """Events pushed that the subscriber had not received by the last poll."""
        return max(0, self.pushed - self.received)


@dataclass(frozen=True)
class ProcessFigures:
    """The event thread of one monitored process: how often it pushed or handled events."""

    server: str
    gaps: Statistics | None
    """Time between two events, in μs."""
    latency: Statistics | None = None
    """Subscribers only: time from push to first callback, in μs."""

    @property
    def rate(self) -> float | None:
        """Events per second, from the median gap."""
        if self.gaps is None or self.gaps.median <= 0:
            return None
        return MICROS_PER_SECOND / self.gaps.median


@dataclass(frozen=True)
class Diagnosis:
    """The figures of one demo run."""

    polls: int
    publishers: tuple[ProcessFigures, ...]
    consumers: tuple[ProcessFigures, ...]
    streams: tuple[StreamFigures, ...]

    @property
    def slow_streams(self) -> tuple[StreamFigures, ...]:
        return tuple(stream for stream in self.streams if stream.too_slow)

    @property
    def missed(self) -> int:
        return sum(stream.missed for stream in self.streams)

    @property
    def behind(self) -> int:
        return sum(stream.behind for stream in self.streams)

    def consumer(self, server: str) -> ProcessFigures | None:
        return next((c for c in self.consumers if c.server == server), None)

    def publisher(self, server: str) -> ProcessFigures | None:
        return next((p for p in self.publishers if p.server == server), None)


@dataclass(frozen=True)
class ScanOutcome:
    """How the call to `TopDevice.Scan()` ended."""

    seconds: float
    error: str | None = None
    """The error's description if it failed."""


def stream_of_topic(topic: str) -> str:
    """The publisher's name of a subscriber's topic: ``d/a.idl5_change`` -> ``d/a.change``."""
    name, _, kind = short_name(topic).rpartition(".")
    return f"{name}.{_TOPIC_KIND.sub('', kind)}"


def _snapshots(poll: Poll) -> dict[str, Snapshot]:
    return {r.server.admin: r.snapshot for r in poll.replies if r.snapshot is not None}


def _subscriptions(snapshot: Snapshot) -> dict[str, Subscription]:
    if snapshot.client is None:
        return {}
    return {stream_of_topic(t): s for t, s in snapshot.client.subscriptions.items()}


def _publishers(snapshot: Snapshot) -> dict[str, int]:
    if snapshot.server is None:
        return {}
    return {short_name(stream): counter for stream, counter in snapshot.server.publishers.items()}


def _summary(values: Sequence[float]) -> Statistics | None:
    return summarise(values) if values else None


class _Collected:
    """Every poll's data, gathered per process: counters first and last seen, and samples."""

    def __init__(self, polls: Iterable[Poll]) -> None:
        self.first_pushed: dict[tuple[str, str], int] = {}
        self.last_pushed: dict[tuple[str, str], int] = {}
        self.first_sub: dict[tuple[str, str], Subscription] = {}
        self.last_sub: dict[tuple[str, str], Subscription] = {}
        self.server_perf: dict[str, list[ServerPerfSample]] = {}
        self.client_perf: dict[str, list[ClientPerfSample]] = {}
        for poll in polls:
            for admin, snapshot in _snapshots(poll).items():
                self._add(admin, snapshot)

    def _add(self, admin: str, snapshot: Snapshot) -> None:
        for stream, counter in _publishers(snapshot).items():
            self.first_pushed.setdefault((admin, stream), counter)
            self.last_pushed[(admin, stream)] = counter
        for stream, subscription in _subscriptions(snapshot).items():
            self.first_sub.setdefault((admin, stream), subscription)
            self.last_sub[(admin, stream)] = subscription
        if snapshot.server is not None and snapshot.server.perf:
            self.server_perf.setdefault(admin, []).extend(snapshot.server.perf)
        if snapshot.client is not None and snapshot.client.perf:
            self.client_perf.setdefault(admin, []).extend(snapshot.client.perf)

    def handled(self, admin: str) -> list[ClientPerfSample]:
        return [s for s in self.client_perf.get(admin, []) if not s.discarded]

    def publisher_of(self, stream: str) -> str | None:
        return next((admin for admin, s in self.last_pushed if s == stream), None)


def _gaps(samples: Iterable[ServerPerfSample | ClientPerfSample]) -> Statistics | None:
    return _summary(
        [s.micros_since_last_event for s in samples if s.micros_since_last_event is not None]
    )


def _latency(samples: Iterable[ClientPerfSample]) -> Statistics | None:
    return _summary(
        [
            s.first_callback_latency_micros
            for s in samples
            if s.first_callback_latency_micros is not None
        ]
    )


def diagnose(polls: Sequence[Poll]) -> Diagnosis:
    """The figures of the monitored processes over ``polls``, oldest poll first."""
    data = _Collected(polls)
    publishers = tuple(
        ProcessFigures(admin, _gaps(samples)) for admin, samples in data.server_perf.items()
    )
    consumers = tuple(
        ProcessFigures(admin, _gaps(data.handled(admin)), _latency(data.handled(admin)))
        for admin in data.client_perf
    )
    streams = []
    for (subscriber, stream), last in sorted(data.last_sub.items()):
        publisher = data.publisher_of(stream)
        if publisher is None:
            continue  # published by a process the demo does not monitor
        first = data.first_sub[(subscriber, stream)]
        attribute = stream.rpartition(".")[0].rpartition("/")[2]
        mine = [s for s in data.handled(subscriber) if s.attr_name == attribute]
        streams.append(
            StreamFigures(
                name=stream,
                publisher=publisher,
                subscriber=subscriber,
                pushed=data.last_pushed[(publisher, stream)]
                - data.first_pushed[(publisher, stream)],
                received=last.server_counter - first.server_counter,
                missed=last.missed_event_count - first.missed_event_count,
                push_gaps=_gaps(data.server_perf.get(publisher, [])),
                processing=_summary([s.process_micros for s in mine]),
                latency=_latency(mine),
            )
        )
    return Diagnosis(len(polls), publishers, consumers, tuple(streams))


def duration(micros: float) -> str:
    """``micros`` in the largest of s, ms and μs in which it is at least 1."""
    unit, size = time_unit(micros)
    value = micros / size
    for digits in (2, 1):  # three significant figures, as far as the value allows
        if round(value, digits) < 10 ** (3 - digits):
            return f"{value:.{digits}f} {unit}"
    return f"{value:.0f} {unit}"


def _rate(figures: ProcessFigures | None) -> str:
    rate = None if figures is None else figures.rate
    return "?" if rate is None else f"{rate:.1f} events/s"


def render_diagnosis(diagnosis: Diagnosis) -> list[str]:
    """The diagnosis as lines of text: cause, rates, latency, and lost or late."""
    findings = [
        *_cause(diagnosis),
        *_rates(diagnosis),
        *_latencies(diagnosis),
        *_late_or_lost(diagnosis),
    ]
    return [
        f"Diagnosis, from the {diagnosis.polls} snapshots the monitor took:",
        *(
            line
            for finding in findings
            for line in textwrap.wrap(finding, WIDTH, subsequent_indent="  ")
        ),
    ]


def _cause(diagnosis: Diagnosis) -> list[str]:
    timed = [s for s in diagnosis.streams if s.processing and s.push_gaps]
    if not timed:
        return ["- Cause: no stream has both push and processing samples to compare."]
    slow = [s for s in timed if s.too_slow]
    lines = [
        f"- Cause: {s.name} takes {_median(s.processing)} per event in {s.subscriber}, "
        f"longer than the {_median(s.push_gaps)} between two events pushed by {s.publisher} "
        "(medians of processing time and event gaps)."
        for s in slow
    ]
    if not slow:
        handled = ", ".join(f"{s.name} in {_median(s.processing)}" for s in timed)
        gaps = ", ".join(
            sorted({f"{_median(s.push_gaps)} between pushes by {s.publisher}" for s in timed})
        )
        lines.append(
            f"- Cause: none left; every stream is handled faster than it is pushed "
            f"({handled}; {gaps}; medians)."
        )
    return lines


def _median(statistics: Statistics | None) -> str:
    return "-" if statistics is None else duration(statistics.median)


_SHARED_THREAD = (
    " That one thread runs the callbacks of every subscription of the process, one event at "
    "a time, so every stream waits behind the slow one."
)


def _rates(diagnosis: Diagnosis) -> list[str]:
    lines = []
    for subscriber in sorted({s.subscriber for s in diagnosis.streams}):
        publishers = sorted({s.publisher for s in diagnosis.streams if s.subscriber == subscriber})
        pushed = ", ".join(f"{p} pushed {_rate(diagnosis.publisher(p))}" for p in publishers)
        shared = _SHARED_THREAD if diagnosis.slow_streams else ""
        lines.append(
            f"- Rates: {pushed}; the event-consumer thread of {subscriber} handled "
            f"{_rate(diagnosis.consumer(subscriber))}.{shared}"
        )
    return lines


def _latencies(diagnosis: Diagnosis) -> list[str]:
    lines = []
    for consumer in diagnosis.consumers:
        if consumer.latency is None:
            continue
        per_stream = ", ".join(
            f"{s.name} {duration(s.latency.maximum)}"
            for s in diagnosis.streams
            if s.subscriber == consumer.server and s.latency is not None
        )
        lines.append(
            f"- Latency: events reached their first callback in {consumer.server} up to "
            f"{duration(consumer.latency.maximum)} after they were pushed ({per_stream})."
        )
    return lines


def _late_or_lost(diagnosis: Diagnosis) -> list[str]:
    counts = "; ".join(
        f"{s.name} {s.pushed} pushed, {s.received} received, {s.missed} missed"
        for s in diagnosis.streams
    )
    if diagnosis.missed:
        verdict = f"{diagnosis.missed} were lost on the way (missed events)"
    elif diagnosis.behind:
        verdict = f"none was missed, but {diagnosis.behind} had not arrived yet"
    elif diagnosis.slow_streams:
        verdict = "every pushed event arrived and none was missed: they were late, not lost"
    else:
        verdict = "every pushed event arrived and none was missed"
    return [f"- Events: {verdict} ({counts}; server counters, first to last snapshot)."]


@dataclass(frozen=True)
class DemoRun:
    """What one variant of the demo produced: the `Scan()` outcome and the diagnosis."""

    scan: ScanOutcome
    diagnosis: Diagnosis


def _scan_text(scan: ScanOutcome) -> str:
    if scan.error is None:
        return f"returned after {scan.seconds:.1f} s"
    return f"failed after {scan.seconds:.1f} s"


def _optional_duration(value: Statistics | None, pick: str) -> str:
    return "-" if value is None else duration(getattr(value, pick))


def render_comparison(before: DemoRun, after: DemoRun, labels: tuple[str, str]) -> list[str]:
    """A table of ``before`` and ``after`` side by side, headed by ``labels``."""
    rows: list[tuple[str, str, str]] = [("Scan()", _scan_text(before.scan), _scan_text(after.scan))]
    later = {(s.subscriber, s.name): s for s in after.diagnosis.streams}
    for stream in before.diagnosis.streams:
        other = later.get((stream.subscriber, stream.name))
        if other is not None:
            rows.append(
                (
                    f"{stream.name}: handling one event (median)",
                    _optional_duration(stream.processing, "median"),
                    _optional_duration(other.processing, "median"),
                )
            )
    for consumer in before.diagnosis.consumers:
        other_consumer = after.diagnosis.consumer(consumer.server)
        rows += [
            (f"{consumer.server}: events handled", _rate(consumer), _rate(other_consumer)),
            (
                f"{consumer.server}: highest latency",
                _optional_duration(consumer.latency, "maximum"),
                _optional_duration(other_consumer.latency if other_consumer else None, "maximum"),
            ),
        ]
    rows.append(("missed events", str(before.diagnosis.missed), str(after.diagnosis.missed)))
    return _table(("", *labels), rows)


def _table(header: tuple[str, str, str], rows: Sequence[tuple[str, str, str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
    return [
        f"    {row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}"
        for row in (header, *rows)
    ]
