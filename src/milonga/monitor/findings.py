"""Findings: what the monitor concludes from its polls, for people and for machines.

A `Finding` names a problem of one server, or of one stream in it, with a `Severity`, a
message that says what is happening, what it means and what to do, and the figures it
rests on.  `Findings` are those of one poll: the ones that hold, and those that held at
the poll before and no longer do.  The rules that make them are in
`milonga.monitor.rules`.  Pure code, no Tango.
"""

from __future__ import annotations

import enum
import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from milonga.monitor import rules
from milonga.monitor.figures import (
    MICROS_PER_SECOND,
    NAME_CACHE,
    FigureWindow,
    StreamFigures,
    full_stream_of_topic,
    interval_seconds,
    sample_attribute,
    stream_of_topic,
)
from milonga.monitor.poll import PollReport, ServerEntry
from milonga.monitor.stats import DECILES_FROM, Metric, PerfTable, Statistics

Evidence = Mapping[str, int | float | str | None]
"""A finding's figures by name; durations in μs and seconds say so in their names."""


class Severity(enum.IntEnum):
    """How bad a finding is; a greater value is worse."""

    INFO = 1
    """Worth knowing; nothing is wrong yet."""
    WARNING = 2
    """Events are late, or will be lost if it goes on."""
    ERROR = 3
    """Events were lost, or a server cannot be watched."""

    @property
    def label(self) -> str:
        """``info``, ``warning`` or ``error``: the name in text and JSON."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Severity:
        """The severity called ``label``; raises ValueError naming the choices."""
        try:
            return cls[label.upper()]
        except KeyError:
            choices = ", ".join(severity.label for severity in cls)
            raise ValueError(f"expected a severity ({choices}), got {label!r}") from None


@functools.total_ordering
@dataclass(frozen=True)
class Subject:
    """What a finding is about: a server, and the stream or topic in it if there is one.

    Subjects sort by server, the server itself before its streams, then by stream.
    """

    server: str
    """The admin device of the server, as the monitor names it."""
    stream: str | None = None
    """``device/attribute.kind`` without the ``tango://host:port/`` prefix, unless two
    subscriptions of the server have that name (to devices of two control systems):
    then with it."""

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Subject):
            return NotImplemented
        return self._order() < other._order()

    def _order(self) -> tuple[str, bool, str]:
        return (self.server, self.stream is not None, self.stream or "")

    def __str__(self) -> str:
        return self.server if self.stream is None else f"{self.server}: {self.stream}"

    def record(self) -> dict[str, str | None]:
        """As JSON: ``{"server": ..., "stream": ... or null}``."""
        return {"server": self.server, "stream": self.stream}


@dataclass(frozen=True)
class Finding:
    """One conclusion about one subject, at one poll."""

    kind: str
    """A stable identifier, such as ``slow-callback``: see docs/findings.md."""
    severity: Severity
    subject: Subject
    message: str
    """One or two sentences: what happens, what it means, what to do, with its figures."""
    evidence: Evidence
    """The figures of the message, as numbers."""

    @property
    def key(self) -> tuple[str, Subject]:
        """What identifies the finding from one poll to the next."""
        return (self.kind, self.subject)

    def record(self) -> dict[str, Any]:
        """As JSON: kind, severity (its label), subject, message and evidence."""
        return {
            "kind": self.kind,
            "severity": self.severity.label,
            "subject": self.subject.record(),
            "message": self.message,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Cleared:
    """A finding that held at the poll before and no longer does."""

    finding: Finding
    """The finding as it was last seen."""
    since: datetime
    """The first poll of the run of polls at which it held."""
    polls: int
    """How many polls in a row it held."""


@dataclass(frozen=True)
class Findings:
    """The findings of one poll."""

    time: datetime
    """The poll's time."""
    active: tuple[Finding, ...] = ()
    """Those that hold, worst first, then by subject and kind."""
    cleared: tuple[Cleared, ...] = ()
    """Those that held at the poll before and no longer do."""

    @property
    def worst(self) -> Severity | None:
        """The severity of the worst active finding; None if there is none."""
        return max((finding.severity for finding in self.active), default=None)

    def of_server(self, server: str) -> Findings:
        """Only those about admin device ``server``."""
        return Findings(
            self.time,
            tuple(f for f in self.active if f.subject.server == server),
            tuple(c for c in self.cleared if c.finding.subject.server == server),
        )


MOMENTARY = frozenset({"missed-events", "server-restarted", "server-not-answering"})
"""Kinds that hold for the poll that shows them, or that the silence of a server decides:
they are not kept while a server is silent."""
RECENT_POLLS = 3
"""Missed events are put down to a slow consumer if slow-callback or falling-behind held
on their stream at this poll or the two before."""


@dataclass
class _Held:
    """A finding that holds, and since when."""

    finding: Finding
    since: datetime
    polls: int = 1


class Diagnostician:
    """The findings of each poll, from the poll reports given one after the other.

    It keeps what the rules of `milonga.monitor.rules` need beyond one poll: each
    stream's last few counters and each subscriber's last few latencies, each server's
    last subscription changes, silent polls and sampling state, when each waiting
    subscription was first seen, which findings held and since when, and the latency of
    each stream on which slow-callback holds.  A finding clears when its rule shows its
    cause gone; a slow-callback on a stream also stays while that stream's figures cannot
    tell and its subscriber is still behind (`rules.slow_callback_held`).  A server that
    does not answer keeps this history, and its findings stay as they were (but for the
    `MOMENTARY` ones) until it answers again: nothing can be told about it meanwhile; so
    do the findings on a stream whose publisher does not answer.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, Subject], _Held] = {}
        self._silent: dict[str, int] = {}
        self._counters: dict[_StreamKey, tuple[str, tuple[int, int], rules.Lags]] = {}
        """By stream (`_stream_key`): its publisher, (last pushed, last received) at the
        last poll at which both ends answered, and the lags since a counter last went
        down."""
        self._latencies: dict[str, deque[tuple[datetime | None, Statistics, PerfTable]]] = {}
        """By server, at its last consecutive answers with latency samples: the time of
        the answer before each, its latency, and its client table."""
        self._churn: dict[str, deque[rules.ChurnStep]] = {}
        self._waiting: dict[str, dict[tuple[str, str, str, str | None], datetime]] = {}
        """By server: when each entry of its not-connected list was first seen there."""
        self._sampling: dict[str, tuple[bool, bool]] = {}
        """By server: whether sampling was on in its server and client side at its last
        answer."""
        self._slow: deque[set[Subject]] = deque(maxlen=RECENT_POLLS)
        self._slow_latency: dict[_StreamKey, float | None] = {}
        """By stream (`_stream_key`), those on which slow-callback held at the last poll:
        the median latency of the stream at its last poll with latency samples."""
        self.streams: tuple[StreamFigures, ...] = ()
        """The figures of each stream between two monitored servers at the last poll given
        to `add`, named as its findings name them."""

    def add(self, report: PollReport) -> Findings:
        """The findings of ``report``'s poll: those that hold, and those that no longer do."""
        found: dict[tuple[str, Subject], Finding] = {}

        def keep(finding: Finding | None) -> None:
            if finding is not None:
                found.setdefault(finding.key, finding)

        answers = [entry for entry in report.entries if entry.report is not None]
        for entry in report.entries:
            keep(self._not_answering(entry))
        restarted = set()
        for entry in answers:
            finding = self._restarted(entry)
            keep(finding)
            if finding is not None:
                restarted.add(entry.server.admin)
        window = FigureWindow()
        window.add(report)
        shared = _shared_names(answers)
        streams = window.streams()
        if shared:
            streams = tuple(_named(stream, shared) for stream in streams)
        self.streams = streams
        present = set()
        for stream in streams:
            key = _stream_key(stream)
            present.add(key)
            keep(rules.slow_callback(stream))
            keep(self._falling_behind(stream, key))
        for entry in answers:
            keep(self._growing_latency(report.time, entry, shared))
        for finding in self._still_slow(streams, found):
            keep(finding)
        self._slow.append(
            {key[1] for key in found if key[0] in {"slow-callback", "falling-behind"}}
        )
        for entry in answers:
            for finding in self._missed(entry, restarted, streams, shared):
                keep(finding)
            keep(self._churning(report.time, entry))
            for finding in self._not_connected(report.time, entry):
                keep(finding)
            for finding in self._samples_shared(entry):
                keep(finding)
        silent = {entry.server.admin for entry in report.entries if entry.report is None}
        for finding in self._unknown(silent, found, answers, shared):
            keep(finding)
        self._forget(report, present, silent, answers)
        return self._settle(report.time, found)

    def _forget(
        self,
        report: PollReport,
        present: set[_StreamKey],
        silent: set[str],
        answers: Sequence[ServerEntry],
    ) -> None:
        """Drop the history of servers no longer polled, and of streams not ``present``
        (`_stream_key`) that both their ends answered without, or whose subscriber, among
        ``answers``, no longer has them: a monitor that runs for weeks keeps only what it
        sees."""
        polled = {entry.server.admin for entry in report.entries}
        for history in (self._latencies, self._churn, self._waiting, self._sampling):
            for admin in history.keys() - polled:
                del history[admin]
        for admin in self._silent.keys() - polled:
            del self._silent[admin]
        gone = self._counters.keys() - present
        if not gone:
            return  # the usual case, quickly
        subscribed = {
            (entry.server.admin, full_stream_of_topic(topic))
            for entry in answers
            if entry.snapshot is not None and entry.snapshot.client is not None
            for topic in entry.snapshot.client.subscriptions
        }
        for key in gone:
            publisher = self._counters[key][0]
            if key[0] not in silent and (publisher not in silent or key not in subscribed):
                del self._counters[key]

    def _unknown(
        self,
        silent: set[str],
        found: Mapping[tuple[str, Subject], Finding],
        answers: Sequence[ServerEntry],
        shared: Mapping[str, frozenset[str]],
    ) -> list[Finding]:
        """The findings that held at the previous poll, that no rule makes now, and that
        this poll cannot decide: those of a ``silent`` server, and those of a stream whose
        publisher is silent while its subscriber, among ``answers``, still has the stream's
        subscription (without it, the stream is gone).  Momentary ones (`MOMENTARY`) held
        for their poll only."""
        unknown = [
            held.finding
            for key, held in self._held.items()
            if key not in found
            and held.finding.kind not in MOMENTARY
            and (
                held.finding.subject.server in silent
                or held.finding.evidence.get("publisher") in silent
            )
        ]
        if not unknown:
            return []
        streams: dict[str, set[str]] = {}
        for entry in answers:
            client = entry.snapshot.client if entry.snapshot else None
            streams[entry.server.admin] = {
                subject_stream(topic, shared.get(entry.server.admin, _NONE_SHARED))
                for topic in (client.subscriptions if client else ())
            }
        return [
            finding
            for finding in unknown
            if finding.subject.server in silent
            or finding.subject.stream in streams.get(finding.subject.server, ())
        ]

    def _not_answering(self, entry: ServerEntry) -> Finding | None:
        admin = entry.server.admin
        if entry.report is not None:
            self._silent.pop(admin, None)
            return None
        self._silent[admin] = polls = self._silent.get(admin, 0) + 1
        return rules.server_not_answering(admin, entry.error or "", polls)

    @staticmethod
    def _restarted(entry: ServerEntry) -> Finding | None:
        assert entry.report is not None
        silent = entry.silent_polls if entry.last_answer is not None else 0
        return rules.server_restarted(entry.server.admin, entry.report, silent)

    def _falling_behind(self, stream: StreamFigures, key: _StreamKey) -> Finding | None:
        """Add ``stream``'s lag to its history (`rules.Lags`) kept under ``key``
        (`_stream_key`), started again when one of its counters went down (a restart, or a
        subscription made again)."""
        counters, lag = stream.counters, stream.lag
        if counters is None or lag is None:
            return None
        before = self._counters.get(key)
        restarted = before is None or rules.went_down(before[1], counters)
        lags = rules.Lags() if restarted or before is None else before[2]
        self._counters[key] = (stream.publisher, counters, lags)
        lags.add(lag)
        return rules.falling_behind(stream, lags) if lags.growing else None

    def _still_slow(
        self, streams: Sequence[StreamFigures], found: Mapping[tuple[str, Subject], Finding]
    ) -> list[Finding]:
        """slow-callback held over (`rules.slow_callback_held`) on each of ``streams`` on
        which it held at the previous poll and none of this poll's rules in ``found``
        makes it; then remember the latency of each stream on which it holds now."""
        slow = {
            (finding.subject.server, finding.subject.stream)
            for (kind, _), finding in found.items()
            if kind == "slow-callback"
        }
        before, self._slow_latency = self._slow_latency, {}
        if not (slow or before):
            return []
        held = []
        for stream in streams:
            key = _stream_key(stream)
            if (stream.subscriber, stream.name) not in slow:
                if key not in before:
                    continue
                finding = rules.slow_callback_held(stream, before[key])
                if finding is None:
                    continue
                held.append(finding)
            latency = stream.latency
            self._slow_latency[key] = before.get(key) if latency is None else latency.median
        return held

    def _growing_latency(
        self, time: datetime, entry: ServerEntry, shared: Mapping[str, frozenset[str]]
    ) -> Finding | None:
        """Add the latency of ``entry``'s client table to its history; the history starts
        again at an answer without at least `DECILES_FROM` latency samples (sampling off,
        or too few events), so that it holds consecutive polls only."""
        assert entry.report is not None
        admin = entry.server.admin
        table = entry.report.client_perf
        latency = None if table is None else table.get(Metric.LATENCY)
        if table is None or latency is None or latency.count < DECILES_FROM:
            self._latencies.pop(admin, None)
            return None
        history = self._latencies.get(admin)
        if history is None:
            history = self._latencies[admin] = deque(maxlen=rules.GROWTH_POLLS + 1)
        history.append((entry.last_answer, latency, table))
        latencies = [statistics for _, statistics, _ in history]
        if not rules.latency_grows(latencies):
            return None
        start = history[0][0]
        busy = None
        if start is not None and time > start:
            span = (time - start).total_seconds() * MICROS_PER_SECOND
            busy = sum(_processing(table) for _, _, table in history) / span
        slowest = _slowest(entry, table, shared.get(admin, _NONE_SHARED))
        return rules.growing_latency(admin, latencies, busy, slowest)

    def _missed(
        self,
        entry: ServerEntry,
        restarted: set[str],
        streams: Sequence[StreamFigures],
        shared: Mapping[str, frozenset[str]],
    ) -> list[Finding]:
        """missed-events of each subscription of ``entry`` whose missed count went up; the
        poll's ``streams`` tell the publisher of each stream, if it is monitored."""
        assert entry.report is not None
        changes = [
            change
            for change in entry.report.subscription_changes
            if change.missed_event_count is not None and change.missed_event_count.delta > 0
        ]
        if not changes:
            return []
        admin = entry.server.admin
        publishers = {s.name: s.publisher for s in streams if s.subscriber == admin}
        slow = set().union(*self._slow)
        found = []
        for change in changes:
            assert change.missed_event_count is not None
            stream = subject_stream(change.topic, shared.get(admin, _NONE_SHARED))
            if (change.server_counter is not None and change.server_counter.delta < 0) or (
                publishers.get(stream) in restarted
            ):
                cause = rules.MissedCause.PUBLISHER_RESTARTED
            elif Subject(admin, stream) in slow:
                cause = rules.MissedCause.CONSUMER_TOO_SLOW
            else:
                cause = rules.MissedCause.UNKNOWN
            found.append(rules.missed_events(admin, change, cause, stream))
        return found

    def _churning(self, time: datetime, entry: ServerEntry) -> Finding | None:
        """Add ``entry``'s subscription changes to its history (none at a first answer)."""
        assert entry.report is not None
        admin = entry.server.admin
        step = rules.ChurnStep.of(entry.report) if entry.last_answer else rules.NO_CHURN
        history = self._churn.get(admin)
        if history is None:
            history = self._churn[admin] = deque(maxlen=rules.CHURN_WINDOW)
        history.append(step)
        return rules.subscription_churn(admin, history, _wakes(time, entry))

    def _not_connected(self, time: datetime, entry: ServerEntry) -> list[Finding]:
        """not-connected for each waiting subscription of ``entry`` first seen more than a
        heartbeat period before ``time``; entries that left the list are forgotten."""
        assert entry.snapshot is not None
        admin = entry.server.admin
        waiting = entry.snapshot.client.not_connected if entry.snapshot.client else ()
        if not waiting:
            self._waiting.pop(admin, None)
            return []  # the usual case, quickly
        before = self._waiting.get(admin, {})
        self._waiting[admin] = seen = {item.key: before.get(item.key, time) for item in waiting}
        found = (
            rules.not_connected(admin, item, (time - seen[item.key]).total_seconds())
            for item in waiting
        )
        return [finding for finding in found if finding is not None]

    def _samples_shared(self, entry: ServerEntry) -> list[Finding]:
        """samples-shared for each side of ``entry`` with sampling on now and at the
        server's previous answer."""
        assert entry.snapshot is not None
        assert entry.report is not None
        admin = entry.server.admin
        server, client = entry.snapshot.server, entry.snapshot.client
        now = (
            server is not None and server.perf is not None,
            client is not None and client.perf is not None,
        )
        before = self._sampling.get(admin, (False, False))
        self._sampling[admin] = now
        found = []
        if now[0] and before[0] and server is not None and server.perf is not None:
            pushed = rules.events_pushed(entry.report)
            found.append(rules.samples_shared(admin, "server", len(server.perf), pushed))
        if now[1] and before[1] and client is not None and client.perf is not None:
            received = rules.events_received(entry.report)
            found.append(rules.samples_shared(admin, "client", len(client.perf), received))
        return [finding for finding in found if finding is not None]

    def _settle(self, time: datetime, found: dict[tuple[str, Subject], Finding]) -> Findings:
        """Record which findings hold at ``time`` and which no longer do."""
        cleared = tuple(
            Cleared(held.finding, held.since, held.polls)
            for key, held in sorted(self._held.items())
            if key not in found
        )
        held_before = self._held
        self._held = {}
        for key, finding in found.items():
            before = held_before.get(key)
            self._held[key] = (
                _Held(finding, time)
                if before is None
                else _Held(finding, before.since, before.polls + 1)
            )
        active = sorted(found.values(), key=lambda f: (-f.severity, f.subject, f.kind))
        return Findings(time, tuple(active), cleared)


def _wakes(time: datetime, entry: ServerEntry) -> rules.Wakes | None:
    """The wake counts of ``entry``'s client table at the poll of ``time``, and the
    wake-ups its channels' heartbeats explain since its previous answer; None without
    wake counts, or without a known interval since a previous answer (`interval_seconds`:
    the wall clock set back makes it unknown)."""
    assert entry.report is not None
    table = entry.report.client_perf
    wakes = None if table is None else table.get(Metric.WAKE_COUNT)
    client = entry.snapshot.client if entry.snapshot else None
    if wakes is None or client is None:
        return None  # the usual case, quickly: no samples
    seconds = interval_seconds(time, entry.last_answer)
    if seconds is None:
        return None
    return rules.Wakes(wakes, len(client.channels) * (seconds / rules.HEARTBEAT_SECONDS + 1))


def _processing(table: PerfTable) -> float:
    """How long the sampled events of a client table took to handle in all, in μs."""
    return sum(
        row.statistics.mean * row.statistics.count
        for row in table.rows
        if row.metric is Metric.PROCESSING_TIME
    )


def _slowest(
    entry: ServerEntry, table: PerfTable, shared: frozenset[str]
) -> tuple[str, Statistics] | None:
    """The stream of ``entry``'s subscriptions whose attribute took it longest to handle
    in ``table`` (median processing time), with that time; None if no row names one.
    The stream is named as subjects name it (`subject_stream`, with the ``shared``
    names of its server)."""
    client = entry.snapshot.client if entry.snapshot else None
    streams: dict[str, str] = {}
    for topic in sorted(client.subscriptions if client else {}, reverse=True):
        stream = subject_stream(topic, shared)
        streams[sample_attribute(stream)] = stream  # the first topic in order wins
    timed = [
        (row.statistics, streams[row.attribute.lower()])
        for row in table.rows
        if row.metric is Metric.PROCESSING_TIME
        and row.attribute
        and row.attribute.lower() in streams
    ]
    if not timed:
        return None
    processing, stream = max(timed, key=lambda item: item[0].median)
    return stream, processing


_StreamKey = tuple[str, str]
"""A subscriber's admin device and the full name of one of its streams (`full_name`,
spelled as cppTango spells the topic, the same at each answer): what tells a stream from
any other, in any control system."""
_NONE_SHARED: frozenset[str] = frozenset()


def _stream_key(stream: StreamFigures) -> _StreamKey:
    """What identifies ``stream`` from one poll to the next (`_StreamKey`)."""
    return stream.subscriber, stream.full_name


def _shared_names(answers: Iterable[ServerEntry]) -> dict[str, frozenset[str]]:
    """By admin device, for each of ``answers`` whose subscriptions share short stream
    names (to devices of one name in two control systems): those names (`shared_of`)."""
    shared = {}
    for entry in answers:
        client = entry.snapshot.client if entry.snapshot else None
        if client is not None and len(client.subscriptions) > 1:
            names = shared_of(tuple(client.subscriptions))
            if names:
                shared[entry.server.admin] = names
    return shared


@functools.lru_cache(maxsize=NAME_CACHE)
def shared_of(topics: tuple[str, ...]) -> frozenset[str]:
    """The short stream names (`stream_of_topic`, in lower case) that two or more of
    ``topics`` have; kept, as a process's topics seldom change."""
    names = [stream_of_topic(topic).lower() for topic in topics]
    if len(set(names)) == len(names):
        return _NONE_SHARED  # the usual case
    return frozenset(name for name in names if names.count(name) > 1)


def subject_stream(topic: str, shared: frozenset[str]) -> str:
    """How subjects name a subscriber's ``topic``: its short stream name, or its full
    one (`full_stream_of_topic`) if the subscriber has that short name ``shared``."""
    name = stream_of_topic(topic)
    return full_stream_of_topic(topic) if name.lower() in shared else name


def _named(stream: StreamFigures, shared: Mapping[str, frozenset[str]]) -> StreamFigures:
    """``stream`` named as subjects name it (`subject_stream`)."""
    if stream.name.lower() in shared.get(stream.subscriber, _NONE_SHARED):
        return stream._replace(name=stream.full_name)
    return stream
