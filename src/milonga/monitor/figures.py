"""The figures of event streams and processes over a window of polls.

A stream here runs from a monitored publisher to a monitored subscriber: the publisher's
``dev/attr.change`` is the subscriber's topic ``dev/attr.idl5_change``.  Its figures come
from both ends: how far the publisher's counter moved, how far the subscriber's last
received counter moved, the missed events, the lag between the two, the push gap, and
the subscriber's processing time and latency for the stream's attribute.  A process's
figures are its event gaps (and rate) and, for a subscriber, its latency.

A stream's two ends are paired by the server: the publisher is the server the
subscription's channel names (`Subscription.channel`, the publisher's admin device), the
same device in the same control system (`server_identity`), so a subscription to a device
of the same name in another control system is not paired with it.  Nothing is looked up,
so a channel that spells the Tango host otherwise than the publisher does (``localhost``
against ``127.0.0.1``, a short host name against the full one) matches no publisher that
way; it is then paired by the publisher's admin device and port alone, if exactly one
monitored publisher matches so (`FigureWindow._pair_loosely`).

A window is one poll interval, for the findings of each poll, or a whole run, for a
report such as the demo's.  A window of one poll uses the tables `diff` made; a longer
one summarises every query's samples together (`SampleBatch`), and takes each stream's
push gap from the intervals through which pushing went on, when it has any
(`StreamFigures.push_gap`).  Pure code, no Tango.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from milonga.monitor.diff import Report, counter_delta
from milonga.monitor.poll import PollReport, ServerEntry
from milonga.monitor.snapshot import (
    ClientPerfSample,
    ServerPerfSample,
    Snapshot,
    short_name,
)
from milonga.monitor.stats import (
    Metric,
    PerfTable,
    SampleBatch,
    Statistics,
    summarise_client_batches,
    summarise_server_batches,
)

MICROS_PER_SECOND = 1_000_000.0
ATTRIBUTE_NAME_LIMIT = 31
"""cppTango cuts the attribute name of a client perf sample to this many characters."""
PUSHES_FOR_A_GAP = 2
"""Events pushed in a window below which its push gap is unknown."""
NAME_CACHE = 65536
"""Names of streams and topics whose short forms are kept, rather than worked out at each
poll: the names of a system seldom change."""
_TOPIC_KIND = re.compile(r"^idl\d+_")
_TRL = re.compile(r"^tango://(?P<host>[^/]+)/(?P<name>[^#]*)", re.IGNORECASE)


@functools.lru_cache(maxsize=NAME_CACHE)
def stream_of_topic(topic: str) -> str:
    """The publisher's short name of a subscriber's topic: ``tango://h:p/d/a.idl5_change``
    -> ``d/a.change``."""
    name, _, kind = short_name(topic).rpartition(".")
    return f"{name}.{_TOPIC_KIND.sub('', kind)}"


def attribute_of(stream: str) -> str:
    """The attribute of a stream or topic: ``dev/ice/name/attr.change`` -> ``attr``."""
    return stream.rpartition(".")[0].rpartition("/")[2]


@functools.lru_cache(maxsize=NAME_CACHE)
def sample_attribute(stream: str) -> str:
    """The attribute of a stream as perf samples name it, in lower case for matching:
    cut to `ATTRIBUTE_NAME_LIMIT` characters."""
    return attribute_of(stream)[:ATTRIBUTE_NAME_LIMIT].lower()


@functools.lru_cache(maxsize=NAME_CACHE)
def server_identity(name: str) -> str:
    """What identifies a server, or any device, in pure code: its name in lower case
    (Tango names are case-insensitive), with the ``host:port/`` of its control system
    when the name has one and without ``tango://`` and ``#`` options.
    ``tango://H:10000/dserver/Pub/1#dbase=no`` -> ``h:10000/dserver/pub/1``; a bare
    ``dserver/Pub/1`` -> ``dserver/pub/1``.

    Unlike the collector's key, nothing is looked up: one host spelled two ways (a name
    and its address) gives two identities.
    """
    match = _TRL.match(name)
    if match is None:
        return name.partition("#")[0].lower()
    return f"{match['host']}/{match['name']}".lower()


def _device_part(identity: str) -> str:
    """A `server_identity` without its ``host:port/``."""
    return identity if identity.count("/") < 3 else identity.split("/", 1)[1]


@functools.lru_cache(maxsize=NAME_CACHE)
def _loose_id(stream_id: _StreamId) -> _StreamId:
    """A stream id without the host name of its control system, keeping the port:
    ``(h:10000/dserver/pub/1, key)`` -> ``(10000/dserver/pub/1, key)``."""
    identity, key = stream_id
    if identity.count("/") < 3:
        return stream_id
    host, _, device = identity.partition("/")
    return f"{host.rpartition(':')[2]}/{device}", key


@functools.lru_cache(maxsize=NAME_CACHE)
def _host_of(name: str) -> str | None:
    """The ``host:port`` of a TRL, in lower case; None for a bare name."""
    match = _TRL.match(name)
    return None if match is None else match["host"].lower()


def interval_seconds(time: datetime, last_answer: datetime | None) -> float | None:
    """The seconds from a server's previous answer, ``last_answer``, to the poll at
    ``time``; None at its first answer, and when the clock shows none or a negative one
    (the wall clock was set back, as NTP may): the interval is not known then."""
    if last_answer is None:
        return None
    seconds = (time - last_answer).total_seconds()
    return seconds if seconds > 0 else None


@functools.lru_cache(maxsize=NAME_CACHE)
def _key(name: str) -> str:
    """What matches a publisher's stream with a subscriber's topic: the short stream name
    (`stream_of_topic`), in lower case, as Tango names are case-insensitive."""
    return stream_of_topic(name).lower()


class StreamFigures(NamedTuple):
    """One event stream from a monitored publisher to a monitored subscriber, over a window.

    A named tuple rather than a dataclass: the findings make one for every stream at every
    poll, and a tuple is several times quicker to make.
    """

    name: str
    """``device/attribute.kind``, as the subscriber's topic names it (`stream_of_topic`)."""
    publisher: str
    """The publisher's admin device."""
    subscriber: str
    """The subscriber's admin device."""
    pushed: int
    """Events pushed on the stream in the window: how far the publisher's counter moved
    up over the interval of each of its polls, since the server's previous answer (an
    interval in which it went down, as at a restart, counts as none)."""
    received: int
    """How far the subscriber's last received server counter moved up in the window."""
    missed: int
    """Missed events the subscriber detected in the window."""
    counters: tuple[int, int] | None
    """The publisher's last pushed server counter and the subscriber's last received one,
    at the last poll of the window at which both answered; None if there was none."""
    push_gap: float | None
    """Time between two pushes, in μs: the seconds of the poll intervals in which the
    publisher's counter moved, over the events pushed in them.  It works without samples,
    and for a publisher of many streams; an interval in which pushing started or stopped
    counts whole, so this is at least the true gap.  A window of several polls, though,
    takes only the intervals through which pushing went on (the counter also moved in
    the publisher's intervals just before and after) if they have `PUSHES_FOR_A_GAP`
    events: pushing neither started nor stopped in those, so they give the gap itself
    rather than a bound.  None below `PUSHES_FOR_A_GAP` events pushed in the intervals
    used: a single push gives no gap, only the interval it fell in."""
    processing: Statistics | None
    """Time the subscriber's event thread took to handle one event of the stream's
    attribute, in μs (its `Metric.PROCESSING_TIME` row for that attribute)."""
    latency: Statistics | None
    """From push to first callback of the stream's attribute in the subscriber, in μs."""
    full_name: str
    """`name` with the ``tango://host:port/`` of the subscriber's topic
    (`full_stream_of_topic`): what tells streams of two control systems apart."""
    sharing: tuple[str, ...] = ()
    """The subscriber's other streams whose attribute has the same name (`attribute_of`)
    in the window: perf samples name only the attribute, so `processing` and `latency`
    are those of all these streams and this one together.  Named as `name` is, or in
    full with ``tango://host:port/`` where that would give this stream's name."""

    @property
    def attribute(self) -> str:
        return attribute_of(self.name)

    @property
    def lag(self) -> int | None:
        """Events pushed that the subscriber had not received, as `counters` show (across
        a wrap of either counter past 2**32)."""
        return None if self.counters is None else counter_delta(self.counters[1], self.counters[0])

    @property
    def too_slow(self) -> bool:
        """Whether handling one event takes longer than the publisher takes between two
        pushes (median processing time against the push gap)."""
        if self.processing is None or self.push_gap is None:
            return False
        return self.processing.median > self.push_gap

    @property
    def behind(self) -> int:
        """Events pushed that the subscriber had not received at the last poll."""
        return max(0, self.lag or 0)


class ProcessFigures(NamedTuple):
    """The event thread of one monitored process: how often it pushed or handled events.

    A named tuple, as `StreamFigures`.
    """

    server: str
    """The process's admin device."""
    gaps: Statistics | None
    """Time between two events it pushed (publishers) or handled (consumers), in μs: the
    `Metric.EVENT_GAPS` row of its table."""
    latency: Statistics | None = None
    """Consumers only: time from push to first callback, in μs."""

    @property
    def rate(self) -> float | None:
        """Events per second, from the median gap."""
        if self.gaps is None or self.gaps.median <= 0:
            return None
        return MICROS_PER_SECOND / self.gaps.median


@dataclass(frozen=True)
class Figures:
    """The figures of a window of polls: per process that took samples, and per stream
    between two monitored processes."""

    polls: int
    """How many polls the figures come from."""
    publishers: tuple[ProcessFigures, ...]
    """Processes with server-side samples."""
    consumers: tuple[ProcessFigures, ...]
    """Processes with client-side samples."""
    streams: tuple[StreamFigures, ...]
    """By subscriber, then stream name."""

    def publisher(self, server: str) -> ProcessFigures | None:
        """The publishing figures of admin device ``server``, if it took samples."""
        return next((p for p in self.publishers if p.server == server), None)

    def consumer(self, server: str) -> ProcessFigures | None:
        """The event-consumer figures of admin device ``server``, if it took samples."""
        return next((c for c in self.consumers if c.server == server), None)


class _Answer(NamedTuple):
    """A server that answered a poll: its entry, with the snapshot and report it has."""

    entry: ServerEntry
    snapshot: Snapshot
    changes: Report
    seconds: float | None
    """Since the server's previous answer (`interval_seconds`): None at its first, or if
    the clock shows no time passed."""


@dataclass(slots=True)
class _Published:
    """One stream of one publisher, as the window saw it."""

    publisher: str
    """Its admin device."""
    counter: int
    """The last pushed server counter, at the publisher's last answer."""
    pushed: int = 0
    busy_seconds: float = 0.0
    """The poll intervals in which the counter moved up, in seconds."""
    pushed_while_busy: int = 0
    """The events pushed in those intervals."""

    @property
    def push_gap(self) -> float | None:
        if self.pushed_while_busy < PUSHES_FOR_A_GAP:
            return None
        return self.busy_seconds * MICROS_PER_SECOND / self.pushed_while_busy


@dataclass(slots=True)
class _Subscribed:
    """One topic of one subscriber, as the window saw it."""

    name: str
    """Its short stream name (`stream_of_topic`)."""
    full_name: str
    """Its stream name with ``tango://host:port/``."""
    attribute: str
    """Its attribute as perf samples name it (`sample_attribute`)."""
    received: int = 0
    missed: int = 0
    counters: tuple[int, int] | None = None
    published: _Published | None = None
    """Its stream as its publisher pushes it, as the subscriber's last answer paired them
    (`FigureWindow._pair_loosely`); None while no monitored publisher is known for it."""


class FigureWindow:
    """The reports of consecutive polls, added in order, and the figures they give.

    Counters are taken from each report's changes, so a window of one poll has the
    figures of the interval since each server's previous answer.
    """

    def __init__(self) -> None:
        self._polls = 0
        self._published: dict[str, dict[str, _Published]] = {}
        """By publisher admin device, then stream key."""
        self._subscribed: dict[str, dict[_StreamId, _Subscribed]] = {}
        """By subscriber admin device, then the publisher and stream key."""
        self._publisher_of: dict[_StreamId, _Published] = {}
        """The stream of each publisher and key, as the publisher was last seen to publish
        it; by each `server_identity` the publisher is known by."""
        self._loosely: _LooseIndex | None = None
        """`_publisher_of` without host names, made when first needed after a publisher
        was added: seldom needed, as most channels spell the Tango host as publishers do."""
        self._answers: dict[str, list[_Answer]] = {}
        """Each server's answers, for its samples."""

    def add(self, report: PollReport) -> None:
        """Add the report of the next poll."""
        self._polls += 1
        answered = {
            entry.server.admin: _Answer(
                entry,
                entry.snapshot,
                entry.report,
                interval_seconds(report.time, entry.last_answer),
            )
            for entry in report.entries
            if entry.snapshot is not None and entry.report is not None
        }
        for admin, answer in answered.items():
            self._add_publisher(answer)
            self._answers.setdefault(admin, []).append(answer)
        for answer in answered.values():
            self._add_subscriber(answer, answered)

    def _add_publisher(self, answer: _Answer) -> None:
        if answer.snapshot.server is None:
            return
        self._loosely = None
        admin, last_answer, seconds = (
            answer.entry.server.admin,
            answer.entry.last_answer,
            answer.seconds,
        )
        moves = {change.stream: change.counter.delta for change in answer.changes.published}
        mine = self._published.setdefault(admin, {})
        for stream, counter in answer.snapshot.server.publishers.items():
            ids = _published_ids(admin, stream)
            key = ids[0][1]
            published = mine.get(key)
            if published is None:
                published = mine[key] = _Published(admin, counter)
            published.counter = counter
            for stream_id in ids:
                self._publisher_of[stream_id] = published
            moved = moves.get(stream, 0)
            if moved > 0 and last_answer is not None:
                published.pushed += moved
                if seconds is not None:
                    published.busy_seconds += seconds
                    published.pushed_while_busy += moved

    def _add_subscriber(self, answer: _Answer, answered: Mapping[str, _Answer]) -> None:
        """Add the subscriptions of ``answer``, one of the ``answered`` of the poll."""
        if answer.snapshot.client is None:
            return
        mine = self._subscribed.setdefault(answer.entry.server.admin, {})
        by_topic: dict[str, _Subscribed] = {}
        unmatched: list[tuple[_Subscribed, _TopicNames, int]] = []
        for topic, subscription in answer.snapshot.client.subscriptions.items():
            named = _topic_names(subscription.channel, topic)
            seen = mine.get(named.id)
            if seen is None:
                seen = mine[named.id] = _Subscribed(named.name, named.full_name, named.attribute)
            by_topic[topic] = seen
            published = seen.published = self._publisher_of.get(named.id)
            if published is None:
                unmatched.append((seen, named, subscription.server_counter))
            elif published.publisher in answered:
                seen.counters = (published.counter, subscription.server_counter)
        if unmatched:
            self._pair_loosely(unmatched, by_topic.values(), answered)
        for change in answer.changes.subscription_changes:
            seen = by_topic[change.topic]
            received, missed = change.server_counter, change.missed_event_count
            if received is not None and received.delta > 0:
                seen.received += received.delta
            if missed is not None and missed.delta > 0:
                seen.missed += missed.delta

    def _pair_loosely(
        self,
        unmatched: Sequence[tuple[_Subscribed, _TopicNames, int]],
        subscribed: Iterable[_Subscribed],
        answered: Mapping[str, _Answer],
    ) -> None:
        """Pair the ``unmatched`` topics of one subscriber (each with its names and its last
        received server counter), whose channels name no monitored publisher's stream;
        ``subscribed`` are all its topics at this answer.

        A topic is paired with the stream of the same name from the server its channel
        names (`server_identity`).  If none is known by that name, the channel may spell
        the Tango host otherwise (nothing is looked up): the stream is then that of the
        one monitored publisher with the same admin device and port (`_loose_id`), unless
        the channel's ``host:port`` is one a monitored publisher is known by (its admin
        device's TRL or its streams' names: a control system the monitor sees, so the
        publisher the channel names is not monitored), or another of the subscriber's
        topics comes from that stream by its exact name (two control systems with the
        same names).  Two such publishers leave it unpaired.
        """
        claimed = {id(seen.published) for seen in subscribed if seen.published is not None}
        for seen, named, server_counter in unmatched:
            published = self._loosely_published(named)
            if published is None or id(published) in claimed:
                continue
            seen.published = published
            if published.publisher in answered:
                seen.counters = (published.counter, server_counter)

    def _loosely_published(self, named: _TopicNames) -> _Published | None:
        """The one monitored stream a topic so ``named`` may come from, when its channel
        spells the Tango host otherwise (`_pair_loosely`)."""
        if self._loosely is None:
            self._loosely = _LooseIndex.of(self._publisher_of)
        if named.host in self._loosely.hosts:
            return None
        candidates = self._loosely.streams.get(_loose_id(named.id), {})
        return next(iter(candidates.values())) if len(candidates) == 1 else None

    def _tables(self, admin: str) -> tuple[PerfTable | None, PerfTable | None]:
        """The server and client tables of ``admin`` over the window: those of its report
        for a window of one poll, otherwise those of all its samples."""
        answers = self._answers[admin]
        if self._polls == 1:
            return answers[0].changes.server_perf, answers[0].changes.client_perf
        server: list[SampleBatch[ServerPerfSample]] = []
        client: list[SampleBatch[ClientPerfSample]] = []
        for answer in answers:
            unsampled = answer.entry.unsampled
            if answer.snapshot.server is not None and answer.snapshot.server.perf:
                server.append(SampleBatch(answer.snapshot.server.perf, unsampled.server))
            if answer.snapshot.client is not None and answer.snapshot.client.perf:
                client.append(SampleBatch(answer.snapshot.client.perf, unsampled.client))
        return (
            summarise_server_batches(server) if server else None,
            summarise_client_batches(client) if client else None,
        )

    def figures(self) -> Figures:
        """The figures of the reports added so far."""
        tables = {admin: self._tables(admin) for admin in self._answers}
        publishers = tuple(
            ProcessFigures(admin, server.get(Metric.EVENT_GAPS))
            for admin, (server, _) in tables.items()
            if server is not None
        )
        consumers = tuple(
            ProcessFigures(admin, client.get(Metric.EVENT_GAPS), client.get(Metric.LATENCY))
            for admin, (_, client) in tables.items()
            if client is not None
        )
        clients = {admin: client for admin, (_, client) in tables.items()}
        return Figures(self._polls, publishers, consumers, self._streams(clients))

    def streams(self) -> tuple[StreamFigures, ...]:
        """The `Figures.streams` of the reports added so far, alone: all the findings need."""
        return self._streams({admin: self._tables(admin)[1] for admin in self._answers})

    def _streams(self, clients: Mapping[str, PerfTable | None]) -> tuple[StreamFigures, ...]:
        """The figures of each stream, with ``clients``, the client table of each server."""
        steady = (
            {admin: _steady_push_gaps(answers) for admin, answers in self._answers.items()}
            if self._polls > 1
            else {}
        )
        streams = []
        for subscriber, subscribed in sorted(self._subscribed.items()):
            table = clients.get(subscriber)
            timings = _NO_TIMINGS if table is None else timings_by_attribute(table)
            shared = _shared_names(subscribed.values())
            for key, seen in sorted(subscribed.items()):
                published = seen.published
                if published is None:
                    continue
                # Processing times and latencies are matched by attribute name, the only
                # name a perf sample carries: streams of one attribute name on several
                # devices share them (`sharing`).
                streams.append(
                    StreamFigures(
                        seen.name,
                        published.publisher,
                        subscriber,
                        published.pushed,
                        seen.received,
                        seen.missed,
                        seen.counters,
                        steady.get(published.publisher, _NO_GAPS).get(key[1], published.push_gap),
                        timings.processing.get(seen.attribute),
                        timings.latency.get(seen.attribute),
                        seen.full_name,
                        shared.get(id(seen), ()),
                    )
                )
        return tuple(streams)


_StreamId = tuple[str, str]
"""A publisher's `server_identity` and a stream's key (`_key`)."""


class _LooseIndex(NamedTuple):
    """The streams of monitored publishers by `_loose_id`, for channels that spell the
    Tango host otherwise than the publishers do."""

    streams: dict[_StreamId, dict[str, _Published]]
    """By `_loose_id`, then publisher admin device."""
    hosts: set[str]
    """The ``host:port`` of each control system a monitored publisher is known by."""

    @classmethod
    def of(cls, publisher_of: Mapping[_StreamId, _Published]) -> _LooseIndex:
        """The index of `FigureWindow._publisher_of`."""
        index = cls({}, set())
        for stream_id, published in publisher_of.items():
            loose = _loose_id(stream_id)
            index.streams.setdefault(loose, {})[published.publisher] = published
            if loose[0] != stream_id[0]:
                index.hosts.add(stream_id[0].partition("/")[0])
        return index


@functools.lru_cache(maxsize=NAME_CACHE)
def _published_ids(admin: str, stream: str) -> tuple[_StreamId, ...]:
    """The ids ``stream`` of the publisher with admin device ``admin`` is known by: with
    the `server_identity` its admin name gives, and with the control system of the
    stream's TRL (cppTango names every stream by its TRL), so that an admin device given
    by its bare name is known by its control system too."""
    own, key = server_identity(admin), _key(stream)
    host = _host_of(stream)
    if host is None:
        return ((own, key),)
    device = _device_part(own)
    of_stream = f"{host}/{device}"
    if own in (of_stream, device):
        return ((of_stream, key),)
    return ((own, key), (of_stream, key))


class _TopicNames(NamedTuple):
    """The names of a subscriber's topic, and of the channel its events come through."""

    id: _StreamId
    """What pairs it with a publisher's stream: the channel's `server_identity` and the
    stream's key (`_key`)."""
    name: str
    """Its short stream name (`stream_of_topic`)."""
    full_name: str
    """Its stream name with ``tango://host:port/`` (`full_stream_of_topic`)."""
    attribute: str
    """Its attribute as perf samples name it (`sample_attribute`)."""
    host: str | None
    """The channel's ``host:port`` (`_host_of`)."""


@functools.lru_cache(maxsize=NAME_CACHE)
def _topic_names(channel: str, topic: str) -> _TopicNames:
    """The names of a subscriber's ``topic``, whose events come through ``channel``: worked
    out once, as the names of a system seldom change."""
    name = stream_of_topic(topic)
    return _TopicNames(
        (server_identity(channel), _key(topic)),
        name,
        full_stream_of_topic(topic),
        sample_attribute(name),
        _host_of(channel),
    )


@functools.lru_cache(maxsize=NAME_CACHE)
def full_stream_of_topic(topic: str) -> str:
    """A topic's stream name with its ``tango://host:port/``."""
    host = topic[: len(topic) - len(short_name(topic))]
    return host + stream_of_topic(topic)


def _shared_names(subscribed: Iterable[_Subscribed]) -> dict[int, tuple[str, ...]]:
    """`StreamFigures.sharing` of each of a subscriber's streams that shares its
    attribute name with others, by the stream's ``id``."""
    streams = list(subscribed)
    if len({seen.attribute for seen in streams}) == len(streams):
        return {}  # the usual case: no attribute name shared
    by_attribute: dict[str, list[_Subscribed]] = {}
    for seen in streams:
        by_attribute.setdefault(seen.attribute, []).append(seen)
    return {
        id(seen): tuple(
            sorted(
                other.full_name if other.name == seen.name else other.name
                for other in group
                if other is not seen
            )
        )
        for group in by_attribute.values()
        if len(group) > 1
        for seen in group
    }


def _steady_push_gaps(answers: Sequence[_Answer]) -> dict[str, float]:
    """The push gap of each stream of a publisher, by key, over the intervals of its
    ``answers`` through which pushing went on: those in which the stream's counter moved
    up, as it did in the intervals just before and after.  Intervals of unknown length
    are left out, and so are streams with fewer than `PUSHES_FOR_A_GAP` events pushed in
    such intervals."""
    moves = [
        {_key(change.stream): change.counter.delta for change in answer.changes.published}
        for answer in answers
    ]
    totals: dict[str, tuple[float, int]] = {}
    for i in range(1, len(answers) - 1):
        before, after, interval = moves[i - 1], moves[i + 1], answers[i].seconds
        if interval is None:
            continue
        for key, moved in moves[i].items():
            if moved > 0 and before.get(key, 0) > 0 and after.get(key, 0) > 0:
                seconds, pushed = totals.get(key, (0.0, 0))
                totals[key] = (seconds + interval, pushed + moved)
    return {
        key: seconds * MICROS_PER_SECOND / pushed
        for key, (seconds, pushed) in totals.items()
        if pushed >= PUSHES_FOR_A_GAP and seconds > 0
    }


class Timings(NamedTuple):
    """The processing times and latencies of a client table's attributes, by the name of
    the attribute in lower case."""

    processing: dict[str, Statistics]
    latency: dict[str, Statistics]


_NO_TIMINGS = Timings({}, {})
"""The timings of a subscriber without a client table; never changed."""
_NO_GAPS: Mapping[str, float] = {}
"""The steady push gaps of a window of one poll: none; never changed."""


def timings_by_attribute(table: PerfTable) -> Timings:
    """The timings of each attribute of a client table."""
    timings = Timings({}, {})
    processing, latency = Metric.PROCESSING_TIME, Metric.LATENCY
    for row in table.rows:
        attribute = row.attribute
        if attribute is None:
            continue
        if row.metric is processing:
            timings.processing[attribute.lower()] = row.statistics
        elif row.metric is latency:
            timings.latency[attribute.lower()] = row.statistics
    return timings


def poll_figures(report: PollReport) -> Figures:
    """The figures of one poll: of the interval since each server's previous answer,
    with the tables `diff` made."""
    window = FigureWindow()
    window.add(report)
    return window.figures()


def run_figures(reports: Iterable[PollReport]) -> Figures:
    """The figures of a whole run of polls, oldest first: every query's samples together."""
    window = FigureWindow()
    for report in reports:
        window.add(report)
    return window.figures()
