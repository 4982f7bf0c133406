"""The rules that turn figures into findings: one small function per kind.

Each rule takes the figures it rests on, already gathered by
`milonga.monitor.findings.Diagnostician` (which keeps the few polls of history the
rules need), and returns the finding if its condition holds.  Every threshold is either
a comparison of two figures of the system itself (processing time against push gap, a
lag against the lags before it) or a limit of cppTango's (its 10 s heartbeat, its 256
samples): nothing is tuned to one system.  docs/findings.md explains each.  Pure code,
no Tango.
"""

from __future__ import annotations

import enum
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from milonga.monitor import findings as model
from milonga.monitor.diff import Report, SubscriptionChange, counter_delta
from milonga.monitor.figures import StreamFigures, stream_of_topic
from milonga.monitor.snapshot import NotConnected, short_name
from milonga.monitor.stats import DECILES_FROM, SAMPLE_LIMIT, Statistics, duration

HIGH_WATER_MARK = 1000
"""cppTango's default ZeroMQ high-water mark: the events each end's ZeroMQ queue holds for
a subscriber.  The kernel's socket buffers hold more besides (on loopback, about 17 000
small events in all before the first was dropped), so a lag above it loses nothing yet."""
BUSY_SHARE = 0.5
"""Callbacks that take more than this share of the time keep the event thread mostly busy:
they, and not something else, make its events late."""
HEARTBEAT_SECONDS = 10.0
"""cppTango's heartbeat period: how often a client tries again to connect a subscription."""
GROWTH_POLLS = 3
"""A figure that rose at each of this many polls in a row is growing, not noise."""
NOISE_FACTOR = 2
"""A lag grows when it rose over `GROWTH_POLLS` by more than this many times its largest
recent fall (`Lags.fall`): the falls of a few polls rarely show the whole band the query
skew moves a healthy lag in (with lags drawn at random from a band, twice the fall seen
so far keeps every start-up quiet in simulation; once would not)."""
BAND_POLLS = 12
"""The polls over which a lag's falls show the width of its band: older falls are
forgotten, so that one early dip does not hide growth for ever."""
CHURN_POLLS = 2
"""Subscriptions that changed at each of this many polls in a row are churning, if
something went away at `CHURN_REMOVALS` of the last `CHURN_WINDOW` polls."""
CHURN_WINDOW = 4
CHURN_REMOVALS = 2
"""A subscription or callback going away at this many polls of `CHURN_WINDOW` repeats: a
scan that subscribes once and unsubscribes once is no churn."""
SHARED_SLACK = 2
"""Events a query may see in the counters but not in the samples, or the other way round:
a push under way while the process is queried moves its sample to the next query."""

BUFFERED = (
    "Events not received yet wait in ZeroMQ's queues (by default "
    f"{HIGH_WATER_MARK} events at each end) and in the kernel's socket buffers: they are "
    "late, not lost, while these have room; once they are full, the next events are "
    "dropped, and the subscriber reports them as missed."
)

SHARED_THREAD = (
    "Every other subscription of {subscriber} waits behind it: one event-consumer thread "
    "per process runs the callbacks of all its subscriptions, one event at a time."
)


def _finding(
    kind: str,
    severity: model.Severity,
    subject: model.Subject,
    message: str,
    **evidence: int | float | str | None,
) -> model.Finding:
    return model.Finding(kind, severity, subject, message, evidence)


def slow_callback(stream: StreamFigures) -> model.Finding | None:
    """slow-callback: the subscriber takes longer to handle one event of ``stream`` (median
    processing time) than its publisher takes between two pushes (push gap)."""
    if not stream.too_slow:
        return None
    assert stream.processing is not None
    assert stream.push_gap is not None
    handled, pushes = f"one event of {stream.name} (median)", "pushes"
    if stream.sharing:
        handled = (
            f"one event of {' or '.join([stream.name, *stream.sharing])} (median of them "
            f"together: perf samples name only the attribute, {stream.attribute!r})"
        )
        pushes = f"pushes of {stream.name}"
    return _finding(
        "slow-callback",
        model.Severity.WARNING,
        model.Subject(stream.subscriber, stream.name),
        f"{stream.subscriber} takes {duration(stream.processing.median)} to handle {handled}, "
        f"longer than the {duration(stream.push_gap)} between two {pushes} by "
        f"{stream.publisher}: its events queue up and arrive later and later. "
        + SHARED_THREAD.format(subscriber=stream.subscriber)
        + " Make the callback faster, or run it off that thread (CallbackScheduler).",
        processing_median_us=stream.processing.median,
        push_gap_us=stream.push_gap,
        pushed=stream.pushed,
        publisher=stream.publisher,
        sharing_attribute=", ".join(stream.sharing) or None,
    )


def slow_callback_held(stream: StreamFigures, latency_before: float | None) -> model.Finding | None:
    """slow-callback, held over: it held on ``stream`` at the previous poll (the caller
    checks), this poll's figures of the stream cannot tell whether its callback is still
    too slow, and its subscriber is still behind.

    The figures cannot tell when there is no processing time of the stream (no sample of
    it), or no push gap (fewer than `PUSHES_FOR_A_GAP` pushes).  The subscriber is behind
    when events pushed have not reached it (a lag above 0), or when the median latency of
    the stream rose above ``latency_before``, that of its last poll with latency samples.
    Then the finding stays rather than clearing and coming back at the next poll that
    can tell.
    """
    if stream.processing is not None and stream.push_gap is not None:
        return None
    lag = stream.lag or 0
    latency = None if stream.latency is None else stream.latency.median
    behind = []
    if lag > 0:
        behind.append(f"{lag} events pushed by {stream.publisher} have not reached it yet")
    if latency is not None and latency_before is not None and latency > latency_before:
        behind.append(
            f"the median latency of its events rose from {duration(latency_before)} to "
            f"{duration(latency)}"
        )
    if not behind:
        return None
    unknown = []
    if stream.processing is None:
        unknown.append("no processing time of it was sampled since the previous snapshot")
    if stream.push_gap is None:
        unknown.append(
            f"{stream.publisher} pushed it {stream.pushed} time(s) since the previous "
            "snapshot, too few for a push gap"
        )
    return _finding(
        "slow-callback",
        model.Severity.WARNING,
        model.Subject(stream.subscriber, stream.name),
        f"{stream.subscriber} is still behind on {stream.name}: {' and '.join(behind)}. "
        "This snapshot cannot tell whether its callback is still slower than the pushes "
        f"({'; '.join(unknown)}), so the slow-callback of the snapshot before stands. "
        + SHARED_THREAD.format(subscriber=stream.subscriber)
        + " Make the callback faster, or run it off that thread (CallbackScheduler).",
        lag=lag,
        latency_median_us=latency,
        latency_median_before_us=latency_before,
        processing_median_us=None if stream.processing is None else stream.processing.median,
        push_gap_us=stream.push_gap,
        pushed=stream.pushed,
        publisher=stream.publisher,
    )


def latency_grows(latencies: Sequence[Statistics]) -> bool:
    """Whether the median of ``latencies`` (see `growing_latency`) rose at each of the
    last `GROWTH_POLLS` of them, and the last of them is above the `GROWTH_POLLS` - 1
    before it, even its lowest value above the other's highest."""
    if len(latencies) <= GROWTH_POLLS:
        return False
    recent = latencies[-GROWTH_POLLS - 1 :]
    return (
        _rising([latency.median for latency in recent])
        and recent[-1].minimum > recent[-GROWTH_POLLS].maximum
    )


def growing_latency(
    server: str,
    latencies: Sequence[Statistics],
    busy: float | None,
    slowest: tuple[str, Statistics] | None,
) -> model.Finding | None:
    """slow-callback, second trigger: the latency of ``server``'s events grows, and its
    callbacks are what keeps its event thread busy.

    ``latencies`` are its latency statistics at its last consecutive polls with at least
    `DECILES_FROM` latency samples each, the last one this poll's; ``busy`` the share of
    the time those polls span (from the answer before the first) that their sampled
    events took to handle; ``slowest`` the stream that took it longest to handle this poll, with
    its processing time.  Holds when the median rose at each of the last `GROWTH_POLLS`
    of them, the fastest event of this poll took longer than the slowest of the poll
    `GROWTH_POLLS` - 1 before (the two do not overlap, so the growth is not noise), and
    handling events took more than `BUSY_SHARE` of that time (the callbacks, not
    something else such as subscribing, hold the thread up).
    """
    if not latency_grows(latencies) or busy is None or busy <= BUSY_SHARE:
        return None
    recent = latencies[-GROWTH_POLLS - 1 :]
    medians = [latency.median for latency in recent]
    earlier, now = recent[-GROWTH_POLLS], recent[-1]
    stream, processing = slowest if slowest is not None else (None, None)
    culprit = (
        ""
        if stream is None or processing is None
        else f" {stream} takes it the longest to handle ({duration(processing.median)} "
        "median per event)."
    )
    return _finding(
        "slow-callback",
        model.Severity.WARNING,
        model.Subject(server, stream),
        f"Events reach their callbacks in {server} later and later: the median latency "
        f"rose at each of the last {GROWTH_POLLS} snapshots "
        f"({' -> '.join(duration(m) for m in medians)}), and even the fastest event now "
        f"({duration(now.minimum)}) took longer than the slowest of {GROWTH_POLLS - 1} "
        f"snapshots before ({duration(earlier.maximum)}): they queue up, as handling them "
        f"took {busy:.0%} of the time over those snapshots.{culprit} "
        + SHARED_THREAD.format(subscriber=server)
        + " Make the slow callback faster, or run it off that thread (CallbackScheduler).",
        latency_median_us=now.median,
        latency_median_before_us=medians[0],
        latency_minimum_us=now.minimum,
        latency_maximum_before_us=earlier.maximum,
        busy_share=busy,
        processing_median_us=None if processing is None else processing.median,
    )


class Lags:
    """A stream's lag (publisher's last pushed counter minus the subscriber's last received
    one) at the polls at which both answered, since its counters last went down.

    Its two queries go out a few milliseconds apart, so the lag of a healthy stream wobbles
    within a band: the events pushed while one poll's queries are under way.  Keeps the
    last `BAND_POLLS` lags, and the falls of the lag over the last `BAND_POLLS` polls,
    each from the highest of those lags before it: how wide the band has shown itself to
    be lately.  A fall that ends a growth (the lag fell, at this poll and at each before
    it back to one at which it was `growing`) is a catch-up, or events dropped once the
    buffers were full: it says nothing of the band, so it is not kept, and the lags
    before it are dropped, no longer highs to measure falls from.
    """

    __slots__ = ("_catching_up", "_falls", "_lags", "_polls", "growing")

    def __init__(self) -> None:
        self._lags: deque[int] = deque(maxlen=BAND_POLLS)
        """The last `BAND_POLLS` lags since the last catch-up."""
        self._falls: deque[tuple[int, int]] = deque(maxlen=BAND_POLLS)
        """The falls of the last `BAND_POLLS` polls: (the poll's number, the fall)."""
        self._polls = 0
        self.growing = False
        """Whether the lag rose at each of the last `GROWTH_POLLS` polls, and by more in
        all than `NOISE_FACTOR` times the largest recent fall (`fall`): more than the
        wobble of the query skew can explain (a healthy lag rises over a few polls by at
        most the width of its band; a falling-behind subscriber's grows without bound).
        Worked out by `add`."""
        self._catching_up = False

    @classmethod
    def of(cls, lags: Iterable[int]) -> Lags:
        """The history of ``lags``, oldest first."""
        history = cls()
        for lag in lags:
            history.add(lag)
        return history

    def add(self, lag: int) -> None:
        """Add the lag of the latest poll."""
        lags = self._lags
        self._polls += 1
        if lags and lag < lags[-1]:
            self._catching_up = self.growing or self._catching_up
            if self._catching_up:
                lags.clear()
            else:
                self._falls.append((self._polls, max(lags) - lag))
        else:
            self._catching_up = False
        lags.append(lag)
        self.growing = self._grew()

    @property
    def recent(self) -> list[int]:
        """The last `GROWTH_POLLS` + 1 lags (fewer just after a catch-up), oldest first."""
        return list(self._lags)[-GROWTH_POLLS - 1 :]

    @property
    def fall(self) -> int:
        """The largest fall of the lag over the last `BAND_POLLS` polls, catch-ups left out:
        the width of its band as lately shown."""
        since = self._polls - BAND_POLLS
        return max((fall for poll, fall in self._falls if poll > since), default=0)

    def _grew(self) -> bool:
        """`growing`, after the latest lag was added."""
        lags = self._lags
        if len(lags) <= GROWTH_POLLS or lags[-1] <= lags[-2]:
            return False  # the usual case, quickly
        recent = self.recent
        return (
            _rising(recent) and recent[-1] > 0 and recent[-1] - recent[0] > NOISE_FACTOR * self.fall
        )


def went_down(before: tuple[int, int], now: tuple[int, int]) -> bool:
    """Whether either of the two counters ``now`` is lower than the same one ``before``,
    other than by wrapping past 2**32 (`counter_delta`)."""
    if now[0] >= before[0] and now[1] >= before[1]:
        return False  # the usual case, quickly
    return counter_delta(before[0], now[0]) < 0 or counter_delta(before[1], now[1]) < 0


def falling_behind(stream: StreamFigures, lags: Lags) -> model.Finding | None:
    """falling-behind: the subscriber's lag on ``stream`` is growing (`Lags.growing`),
    the lags of ``lags`` at the polls at which both answered, this poll's last.  A warning
    however large the lag: the events it counts are late, not lost, until the buffers that
    hold them are full; those lost are missed-events."""
    if not lags.growing:
        return None
    recent = lags.recent
    lag = recent[-1]
    return _finding(
        "falling-behind",
        model.Severity.WARNING,
        model.Subject(stream.subscriber, stream.name),
        f"{stream.subscriber} is {lag} events behind {stream.publisher} on {stream.name}, "
        f"and the gap grew at each of the last {GROWTH_POLLS} snapshots "
        f"({' -> '.join(map(str, recent))}; last pushed minus last received server "
        "counter), by more than the snapshots' timing explains: it takes events in more "
        "slowly than they are pushed. "
        + BUFFERED
        + " Find what holds up its event thread: a slow callback (--monitor shows "
        "processing times).",
        lag=lag,
        lag_before=recent[0],
        lag_fall_seen=lags.fall,
        pushed=stream.pushed,
        received=stream.received,
        publisher=stream.publisher,
    )


class MissedCause(enum.Enum):
    """What the other figures say about why events were missed."""

    PUBLISHER_RESTARTED = "publisher-restarted"
    CONSUMER_TOO_SLOW = "consumer-too-slow"
    UNKNOWN = "unknown"


_MISSED_CAUSES = {
    MissedCause.PUBLISHER_RESTARTED: (
        "Its publisher restarted (its server counters went down): events pushed around the "
        "restart never arrived. Find out why it restarted."
    ),
    MissedCause.CONSUMER_TOO_SLOW: (
        "It handles this stream more slowly than it is pushed (see slow-callback and "
        "falling-behind): its events piled up until ZeroMQ's queues and the kernel's socket "
        "buffers were full, and the next ones were dropped. Make the callback faster, or "
        "run it off the event thread (CallbackScheduler)."
    ),
    MissedCause.UNKNOWN: (
        "Either its publisher restarted, or it fell so far behind that ZeroMQ's queues and "
        "the kernel's socket buffers were full and the next events were dropped; monitor "
        "the publisher too, with --monitor, to tell which."
    ),
}


def events_lost(change: SubscriptionChange) -> int | None:
    """The events of a subscription lost since its server's previous answer, estimated
    from ``change``: how far its last received server counter rose, less the events it
    received and discarded, and never fewer than its gaps (how far its missed count
    rose: cppTango counts each jump of the server counter once, however many events it
    skips).  None if one of those counters went down: a restart, or a subscription made
    again, and they no longer compare."""
    rises = [
        0 if moved is None else moved.delta
        for moved in (
            change.server_counter,
            change.event_count,
            change.discarded_event_count,
            change.missed_event_count,
        )
    ]
    if min(rises) < 0:
        return None
    counter, received, discarded, gaps = rises
    return max(gaps, counter - received - discarded)


def missed_events(
    server: str, change: SubscriptionChange, cause: MissedCause, stream: str | None = None
) -> model.Finding:
    """missed-events: subscription ``change.topic`` of ``server`` missed events since the
    server's previous answer (its missed count rose), for the likely ``cause``: the gaps
    in its server counter, and the events lost (`events_lost`).  ``stream`` names the
    topic's stream, by default by its short name (`stream_of_topic`)."""
    stream = stream or stream_of_topic(change.topic)
    gaps = 0 if change.missed_event_count is None else change.missed_event_count.delta
    lost = events_lost(change)
    where = f"in {gaps} gap(s) of the server counter since its previous snapshot"
    how_many = (
        f"lost {lost} event(s) of {stream} {where}"
        if lost is not None
        else f"lost events of {stream} {where} (how many is unknown: its counters went down)"
    )
    return _finding(
        "missed-events",
        model.Severity.ERROR,
        model.Subject(server, stream),
        f"{server} {how_many}: they are lost, not late. " + _MISSED_CAUSES[cause],
        gaps=gaps,
        events_lost=lost,
        cause=cause.value,
    )


@dataclass(frozen=True)
class ChurnStep:
    """How a server's subscriptions changed at one poll."""

    added: int = 0
    """Subscriptions that appeared."""
    removed: int = 0
    """Subscriptions that disappeared."""
    callbacks_added: int = 0
    callbacks_removed: int = 0

    @classmethod
    def of(cls, report: Report) -> ChurnStep:
        """The changes of ``report``, a report against a previous answer."""
        moves = [c.callback_count.delta for c in report.subscription_changes if c.callback_count]
        if not (moves or report.new_subscriptions or report.removed_subscriptions):
            return NO_CHURN
        return cls(
            added=len(report.new_subscriptions),
            removed=len(report.removed_subscriptions),
            callbacks_added=sum(move for move in moves if move > 0),
            callbacks_removed=-sum(move for move in moves if move < 0),
        )

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.callbacks_added or self.callbacks_removed)

    @property
    def took_away(self) -> bool:
        """Whether a subscription or a callback went away: more than a start-up adding."""
        return bool(self.removed or self.callbacks_removed)


class Wakes(NamedTuple):
    """How often a subscriber's event thread woke up at one poll, and what is expected.

    A named tuple rather than a dataclass: the findings make one for every subscriber at
    every poll, and a tuple is quicker to make.
    """

    statistics: Statistics
    """Its `Metric.WAKE_COUNT` row: wake-ups per sampled event, 1 when nothing else woke it."""
    heartbeats: float
    """Wake-ups the heartbeats of its channels explain: at most one per channel per
    heartbeat period, over the poll interval, plus one per channel."""

    @property
    def extra(self) -> int:
        """Wake-ups beyond the first of each event, from its mean and count."""
        return round((self.statistics.mean - 1) * self.statistics.count)

    @property
    def unexplained(self) -> bool:
        """Whether more than a tenth of the events found the thread woken for something
        other than a heartbeat, on at least `DECILES_FROM` samples."""
        count = self.statistics.count
        return count >= DECILES_FROM and self.extra - self.heartbeats > count / 10


NO_CHURN = ChurnStep()
"""A poll at which no subscription or callback came or went."""


def subscription_churn(
    server: str, steps: Sequence[ChurnStep], wakes: Wakes | None
) -> model.Finding | None:
    """subscription-churn: ``server``'s subscriptions or callbacks changed at each of the
    last `CHURN_POLLS` of ``steps`` (one per answer, this poll's last), and something went
    away at `CHURN_REMOVALS` of the last `CHURN_WINDOW` of them (the pattern repeats); or,
    from this poll's ``wakes``, more than a tenth of its events found its event thread
    woken for something else than a heartbeat first."""
    woken = wakes is not None and wakes.unexplained
    if not woken and (not steps or not steps[-1].changed):
        return None  # the usual case, quickly: nothing changed at this poll
    window = list(steps)[-CHURN_WINDOW:]
    recent = window[-CHURN_POLLS:]
    churning = (
        len(recent) == CHURN_POLLS
        and all(step.changed for step in recent)
        and sum(step.took_away for step in window) >= CHURN_REMOVALS
    )
    if not churning and not woken:
        return None
    parts = []
    if churning:
        parts.append(
            f"Its subscriptions changed at each of the last {CHURN_POLLS} snapshots, and "
            f"some went away at {sum(step.took_away for step in window)} of the last "
            f"{len(window)} ({sum(s.added for s in window)} subscriptions appeared and "
            f"{sum(s.removed for s in window)} went away; {sum(s.callbacks_added for s in window)}"
            f" callbacks were added and {sum(s.callbacks_removed for s in window)} removed)."
        )
    if woken:
        assert wakes is not None
        parts.append(
            f"Its event thread woke up {wakes.extra} extra times for its "
            f"{wakes.statistics.count} sampled events, where heartbeats explain at most "
            f"{wakes.heartbeats:.0f}: more than a tenth of the events found it woken for "
            "something else, such as a subscription being made or dropped."
        )
    return _finding(
        "subscription-churn",
        model.Severity.WARNING,
        model.Subject(server),
        f"{server} keeps subscribing and unsubscribing. {' '.join(parts)} While cppTango "
        "subscribes or unsubscribes, the process's events wait; keep subscriptions (and the "
        "DeviceProxy objects that hold them) for as long as the client runs.",
        subscriptions_added=sum(s.added for s in window),
        subscriptions_removed=sum(s.removed for s in window),
        callbacks_added=sum(s.callbacks_added for s in window),
        callbacks_removed=sum(s.callbacks_removed for s in window),
        extra_wakes=None if wakes is None else wakes.extra,
        heartbeat_wakes=None if wakes is None else wakes.heartbeats,
        wake_samples=None if wakes is None else wakes.statistics.count,
    )


def not_connected(server: str, entry: NotConnected, waited: float) -> model.Finding | None:
    """not-connected: ``server`` has had ``entry`` in its not-connected list for ``waited``
    seconds (poll times since it was first seen there), longer than a heartbeat period."""
    if waited <= HEARTBEAT_SECONDS:
        return None
    where = "" if entry.tango_host is None else f" (Tango host {entry.tango_host})"
    return _finding(
        "not-connected",
        model.Severity.WARNING,
        model.Subject(server, entry.stream),
        f"{server} has been waiting {waited:.0f} s to connect its subscription to "
        f"{entry.stream}, longer than one {HEARTBEAT_SECONDS:g} s heartbeat period (last "
        f"attempt at {entry.last_heartbeat}): none of its events arrive. Check that the "
        f"device's server runs and can be reached{where}; cppTango keeps trying.",
        waited_seconds=waited,
        last_heartbeat=entry.last_heartbeat,
        heartbeat_seconds=HEARTBEAT_SECONDS,
    )


def server_not_answering(server: str, error: str, polls: int) -> model.Finding:
    """server-not-answering: ``server`` did not answer the last ``polls`` polls; ``error``
    is why it did not answer this one."""
    reason = error.splitlines()[0] if error else "no reply"
    return _finding(
        "server-not-answering",
        model.Severity.ERROR,
        model.Subject(server),
        f"{server} did not answer {polls} snapshot(s) in a row: {reason}. Its events cannot "
        "be watched; check that it runs and that its host can be reached.",
        polls=polls,
        error=reason,
    )


def server_restarted(server: str, report: Report, silent_polls: int) -> model.Finding | None:
    """server-restarted: of the counters ``server`` publishes that were in its previous
    answer and are in this one (``report`` compares the two answers), at least one
    went down and none rose; or, after ``silent_polls`` polls without an answer, the same
    of the event counts of its subscriptions.

    A restart starts every counter again: one that went down while another rose is a
    stream whose counter started again (or a subscription made again).  A counter that
    did not move says nothing (an idle stream, which may have pushed nothing since the
    restart either), and one that wrapped past 2**32 rose (`counter_delta`).
    """
    down = _down_alone((change.stream, change.counter.delta) for change in report.published)
    if not down and silent_polls:
        down = _down_alone(
            (change.topic, change.event_count.delta)
            for change in report.subscription_changes
            if change.event_count is not None
        )
    if not down:
        return None
    names = [short_name(name) for name in down]
    after = f" after {silent_polls} snapshot(s) without an answer" if silent_polls else ""
    return _finding(
        "server-restarted",
        model.Severity.WARNING,
        model.Subject(server),
        f"{server} restarted{after}: {len(names)} of its counters went down "
        f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) and none rose. Its "
        "subscribers reconnect by themselves, but events pushed around the restart may be "
        "missed; find out why it restarted.",
        counters_down=len(names),
        silent_polls=silent_polls,
    )


def _down_alone(moves: Iterable[tuple[str, int]]) -> list[str]:
    """The names of ``moves`` (name, how far its counter moved) whose counter went down,
    if none rose; otherwise none, as soon as one rose."""
    down = []
    for name, delta in moves:
        if delta > 0:
            return []
        if delta < 0:
            down.append(name)
    return down


def events_pushed(report: Report) -> int:
    """Events a process pushed since its previous answer, by its counters: how far each
    counter moved up, and the counters of streams new since then."""
    pushed = 0
    for change in report.published:
        if change.counter.delta > 0:
            pushed += change.counter.delta
    for publisher in report.new_publishers:
        pushed += publisher.counter
    return pushed


def events_received(report: Report) -> int:
    """Events a process received since its previous answer, by its counters: handled and
    discarded ones, on every subscription, new ones included."""
    received = 0
    for changed in report.subscription_changes:
        if changed.event_count is not None and changed.event_count.delta > 0:
            received += changed.event_count.delta
        discarded = changed.discarded_event_count
        if discarded is not None and discarded.delta > 0:
            received += discarded.delta
    for subscription in report.new_subscriptions:
        received += subscription.event_count + subscription.discarded_event_count
    return received


def samples_shared(server: str, side: str, samples: int, events: int) -> model.Finding | None:
    """samples-shared: with sampling on since ``server``'s previous answer, its ``side``
    (``server`` or ``client``) returned ``samples`` samples, fewer than half of the
    ``events`` its counters show in that time (and more than `SHARED_SLACK` fewer),
    although its buffer did not fill: another client took the rest."""
    if samples >= SAMPLE_LIMIT or 2 * samples >= events or events - samples <= SHARED_SLACK:
        return None
    counted = "pushed" if side == "server" else "received"
    return _finding(
        "samples-shared",
        model.Severity.WARNING,
        model.Subject(server),
        f"{server} returned {samples} {side} performance samples for the {events} events "
        f"it {counted} since its previous snapshot: another client, such as a second "
        "monitor, is querying it and emptying its samples, so the performance figures "
        "here miss most events. Poll each server from one monitor only.",
        side=side,
        samples=samples,
        events=events,
    )


def _rising(values: Sequence[float]) -> bool:
    """Whether each of ``values`` is greater than the one before."""
    return all(map(operator.lt, values, values[1:]))
