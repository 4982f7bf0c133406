"""The figures of a demo run, computed from the monitor's polls and nothing else.

`diagnose` turns the polls into a `Diagnosis`: per event stream, how far the server
counters moved on each side, the missed events, the push gaps, processing times and
latencies; per process, the rate and latency of its event thread.  Whether a stream is
too slow is decided by comparing two of those figures, never against a constant.
Pure code, no Tango.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from milonga.monitor import (
    ClientPerfSample,
    Poll,
    Snapshot,
    Statistics,
    Subscription,
    Unsampled,
    summarise,
)
from milonga.monitor.figures import stream_of_topic
from milonga.monitor.snapshot import short_name
from milonga.monitor.stats import event_gaps

MICROS_PER_SECOND = 1_000_000.0


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
    """The process's admin device."""
    gaps: Statistics | None
    """Time between two events, in μs, counted as the monitor's `Event Gaps` rows are."""
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
    """The figures of one demo run: per monitored process and per event stream between two
    monitored processes."""

    polls: int
    """How many polls the figures come from."""
    publishers: tuple[ProcessFigures, ...]
    consumers: tuple[ProcessFigures, ...]
    streams: tuple[StreamFigures, ...]

    @property
    def slow_streams(self) -> tuple[StreamFigures, ...]:
        """The streams whose events take longer to handle than to be pushed."""
        return tuple(stream for stream in self.streams if stream.too_slow)

    @property
    def missed(self) -> int:
        """Missed events detected on all streams."""
        return sum(stream.missed for stream in self.streams)

    @property
    def behind(self) -> int:
        """Events pushed on all streams that had not been received by the last poll."""
        return sum(stream.behind for stream in self.streams)

    def consumer(self, server: str) -> ProcessFigures | None:
        """The event-consumer figures of admin device ``server``, if it handled events."""
        return next((c for c in self.consumers if c.server == server), None)

    def publisher(self, server: str) -> ProcessFigures | None:
        """The publishing figures of admin device ``server``, if it pushed events."""
        return next((p for p in self.publishers if p.server == server), None)


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


def _handled(samples: Iterable[ClientPerfSample]) -> list[ClientPerfSample]:
    """The samples of events that were handled, not discarded as duplicates."""
    return [s for s in samples if not s.discarded]


def _summary(values: Sequence[float]) -> Statistics | None:
    return summarise(values) if values else None


class _Collected:
    """Every poll's data, gathered per process: counters first and last seen, client
    samples, and event gaps.

    The gaps are the monitor's `Event Gaps` (`event_gaps`), poll by poll: the first gap
    after sampling was turned on in a process is left out, as it spans the time sampling
    was off (`Unsampled`).
    """

    def __init__(self, polls: Iterable[Poll]) -> None:
        self.first_pushed: dict[tuple[str, str], int] = {}
        self.last_pushed: dict[tuple[str, str], int] = {}
        self.first_sub: dict[tuple[str, str], Subscription] = {}
        self.last_sub: dict[tuple[str, str], Subscription] = {}
        self.client_perf: dict[str, list[ClientPerfSample]] = {}
        self.push_gaps: dict[str, list[float]] = {}
        """Per process that pushed events: the gaps between them, in μs."""
        self.handling_gaps: dict[str, list[float]] = {}
        """Per process that handled events: the gaps between them, in μs."""
        self._unsampled: dict[str, Unsampled] = {}
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
        unsampled = self._unsampled.get(admin, Unsampled())
        self._unsampled[admin] = unsampled.after(snapshot)
        if snapshot.server is not None and snapshot.server.perf:
            pushed = snapshot.server.perf
            self.push_gaps.setdefault(admin, []).extend(
                event_gaps(pushed, pushed, unsampled.server)
            )
        if snapshot.client is not None and snapshot.client.perf:
            samples = snapshot.client.perf
            self.client_perf.setdefault(admin, []).extend(samples)
            self.handling_gaps.setdefault(admin, []).extend(
                event_gaps(samples, _handled(samples), unsampled.client)
            )

    def handled(self, admin: str) -> list[ClientPerfSample]:
        """The samples of events ``admin``'s process handled."""
        return _handled(self.client_perf.get(admin, []))

    def publisher_of(self, stream: str) -> str | None:
        """The monitored admin device that publishes ``stream``, if any."""
        return next((admin for admin, s in self.last_pushed if s == stream), None)


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
        ProcessFigures(admin, _summary(gaps)) for admin, gaps in data.push_gaps.items()
    )
    consumers = tuple(
        ProcessFigures(admin, _summary(data.handling_gaps[admin]), _latency(data.handled(admin)))
        for admin in data.client_perf
    )
    streams = (
        _stream_figures(data, subscriber, stream, publisher)
        for subscriber, stream in sorted(data.last_sub)
        # Streams published by a process the demo does not monitor are left out.
        if (publisher := data.publisher_of(stream)) is not None
    )
    return Diagnosis(len(polls), publishers, consumers, tuple(streams))


def _stream_figures(
    data: _Collected, subscriber: str, stream: str, publisher: str
) -> StreamFigures:
    """The figures of ``stream`` from ``publisher`` to ``subscriber`` (admin devices).

    Processing times are matched by attribute name, the only name a perf sample carries.
    """
    first, last = data.first_sub[(subscriber, stream)], data.last_sub[(subscriber, stream)]
    attribute = stream.rpartition(".")[0].rpartition("/")[2]
    mine = [s for s in data.handled(subscriber) if s.attr_name == attribute]
    return StreamFigures(
        name=stream,
        publisher=publisher,
        subscriber=subscriber,
        pushed=data.last_pushed[(publisher, stream)] - data.first_pushed[(publisher, stream)],
        received=last.server_counter - first.server_counter,
        missed=last.missed_event_count - first.missed_event_count,
        push_gaps=_summary(data.push_gaps.get(publisher, [])),
        processing=_summary([s.process_micros for s in mine]),
        latency=_latency(mine),
    )
