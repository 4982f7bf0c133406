"""What changed in one process's event system between two snapshots: the report model.

`diff(previous, current)` compares two `Snapshot`s of the same process.  Pure code, no
Tango: the report is plain data that `milonga.monitor.render` turns into text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from milonga.monitor.snapshot import (
    EMPTY_SNAPSHOT,
    ClientSide,
    NotConnected,
    ServerSide,
    Snapshot,
    Subscription,
)
from milonga.monitor.stats import PerfTable, summarise_client_perf, summarise_server_perf

COUNTER_WRAP = 2**32
"""cppTango's event counters are unsigned 32-bit integers: after 2**32 - 1 comes 0."""


WRAP_MARGIN = 2**24
"""How near its ends a 32-bit counter must be on both sides of a move for the move to be
read as a wrap: before within this of 2**32, after below it (or the other way round).
16 777 216 events is weeks of pushing at 10 Hz on either side of the wrap, and a counter
that started again after a restart seldom sits that close to 2**32 before it."""


def counter_delta(before: int, after: int) -> int:
    """How far a counter moved from ``before`` to ``after``.  A fall from within
    `WRAP_MARGIN` of 2**32 to below `WRAP_MARGIN` is the counter wrapping past 2**32,
    and counts as the rise it was (and such a rise, as a fall that wrapped the other way);
    any other move counts as it is, so a restart from a counter above 2**31 is a fall."""
    delta = after - before
    if -_WRAP_JUMP < delta < _WRAP_JUMP:
        return delta  # the usual case, quickly: no wrap
    if before >= _WRAP_TOP and after < WRAP_MARGIN:
        return delta + COUNTER_WRAP
    if before < WRAP_MARGIN and after >= _WRAP_TOP:
        return delta - COUNTER_WRAP
    return delta


_WRAP_TOP = COUNTER_WRAP - WRAP_MARGIN
_WRAP_JUMP = COUNTER_WRAP - 2 * WRAP_MARGIN
"""The least move of a wrap, either way."""


@dataclass(slots=True, init=False)
class Change:
    """A counter that moved from ``before`` to ``after``.  Not frozen, and with an
    ``__init__`` of its own rather than a ``__post_init__``, to be quick to make (a poll
    makes one per counter that moved); never changed once made."""

    before: int
    after: int
    delta: int = field(init=False, repr=False, compare=False)
    """``after`` - ``before``, across a wrap of the counter (`counter_delta`): worked out
    once, as the findings read it several times."""

    def __init__(self, before: int, after: int) -> None:
        self.before = before
        self.after = after
        delta = after - before
        # `counter_delta`, with its usual case (no wrap) spelled out, as it is made so often
        self.delta = delta if -_WRAP_JUMP < delta < _WRAP_JUMP else counter_delta(before, after)


class Publisher(NamedTuple):
    """A stream the process publishes, with the last server counter pushed on it."""

    stream: str
    counter: int


class PublisherChange(NamedTuple):
    """A stream on which the process pushed events (or whose counter went down)."""

    stream: str
    counter: Change


class SubscriptionChange(NamedTuple):
    """The fields of one subscription that changed; None for those that did not."""

    topic: str
    event_count: Change | None = None
    server_counter: Change | None = None
    callback_count: Change | None = None
    missed_event_count: Change | None = None
    discarded_event_count: Change | None = None
    last_resubscribed: tuple[str | None, str | None] | None = None
    """(before, after) when the subscription was renewed in between."""


class Report(NamedTuple):
    """What changed in one process, section by section; empty tuples when nothing did.

    A named tuple rather than a frozen dataclass, as are its parts (`Publisher`,
    `PublisherChange`, `SubscriptionChange`): every poll makes them for every server, and
    a tuple is several times quicker to make.
    """

    new_publishers: tuple[Publisher, ...] = ()
    published: tuple[PublisherChange, ...] = ()
    removed_publishers: tuple[str, ...] = ()
    server_perf: PerfTable | None = None
    """None when the snapshot carries no server samples."""
    new_subscriptions: tuple[Subscription, ...] = ()
    subscription_changes: tuple[SubscriptionChange, ...] = ()
    removed_subscriptions: tuple[str, ...] = ()
    not_connected: tuple[NotConnected, ...] = ()
    """Subscriptions the process started trying to connect since the previous snapshot."""
    connected_again: tuple[NotConnected, ...] = ()
    """Entries that left the not-connected list: connected, or unsubscribed."""
    client_perf: PerfTable | None = None
    went_down: tuple[str, ...] = ()
    """Streams and topics whose own counters went down: the process restarted, or these
    were dropped and subscribed to again in between."""

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to show."""
        return not any(self)


@dataclass(frozen=True)
class Unsampled:
    """Which sides of a process have taken no sample since performance sampling was last
    turned on in it.

    cppTango measures a sample's gap from the last event it sampled, and keeps that time
    while sampling is off: the first sample after sampling is turned on has a gap that
    spans all the time it was off.  `diff` leaves that gap out of the `Event Gaps` rows.
    """

    server: bool = True
    client: bool = True

    def after(self, snapshot: Snapshot) -> Unsampled:
        """What is still unsampled once ``snapshot`` is read: a side with sampling off (or
        not there) waits for a first sample again, a side with samples no longer does, and
        a side with sampling on but no sample yet stays as it was.  One of four shared
        values (`_UNSAMPLED`), as every poll asks it of every server."""
        return _UNSAMPLED[
            _still_unsampled(self.server, snapshot.server),
            _still_unsampled(self.client, snapshot.client),
        ]


_UNSAMPLED = {
    (server, client): Unsampled(server, client)
    for server in (False, True)
    for client in (False, True)
}
"""Each value of `Unsampled`, by (server, client)."""
UNSAMPLED = _UNSAMPLED[True, True]
"""Both sides unsampled: the state of a process not seen before."""


def _still_unsampled(before: bool, side: ServerSide | ClientSide | None) -> bool:
    if side is None or side.perf is None:
        return True
    return before and not side.perf


_NOTHING: Mapping[str, Any] = MappingProxyType({})
"""The publishers or subscriptions of a side that is not there; never changed."""


def diff(
    previous: Snapshot | None, current: Snapshot, unsampled: Unsampled | None = None
) -> Report:
    """What changed from ``previous`` to ``current``; with no previous, everything is new.

    The performance tables summarise ``current``'s samples, which are exactly those taken
    since the previous query of the process, whoever made it.  ``unsampled`` says which
    sides had taken no sample since sampling was turned on, as of ``previous``: the first
    sample of such a side has no real gap (see `Unsampled`).  Left out, it is worked out
    from ``previous`` alone, which takes a side without samples there (or no
    ``previous``) as one where sampling had just been turned on; `PollHistory` keeps it
    across polls instead.
    """
    if unsampled is None:
        unsampled = UNSAMPLED if previous is None else UNSAMPLED.after(previous)
    before = previous or EMPTY_SNAPSHOT
    old_counters = before.server.publishers if before.server else _NOTHING
    new_counters = current.server.publishers if current.server else _NOTHING
    old_subscriptions = before.client.subscriptions if before.client else _NOTHING
    new_subscriptions = current.client.subscriptions if current.client else _NOTHING
    old_waiting = before.client.not_connected if before.client else ()
    new_waiting = current.client.not_connected if current.client else ()

    new_publishers, published = _publisher_changes(old_counters, new_counters)
    added, changed = _subscription_changes(old_subscriptions, new_subscriptions)
    went_down = [c.stream for c in published if c.counter.delta < 0]
    went_down += [c.topic for c in changed if c.event_count and c.event_count.delta < 0]

    server_samples = current.server.perf if current.server else None
    client_samples = current.client.perf if current.client else None
    return Report(
        new_publishers=new_publishers,
        published=published,
        removed_publishers=_removed(old_counters, new_counters, len(new_publishers)),
        server_perf=summarise_server_perf(server_samples, sampling_just_started=unsampled.server)
        if server_samples
        else None,
        new_subscriptions=added,
        subscription_changes=changed,
        removed_subscriptions=_removed(old_subscriptions, new_subscriptions, len(added)),
        not_connected=_sorted_entries(new_waiting, exclude=old_waiting),
        connected_again=_sorted_entries(old_waiting, exclude=new_waiting),
        client_perf=summarise_client_perf(client_samples, sampling_just_started=unsampled.client)
        if client_samples
        else None,
        went_down=tuple(sorted(went_down)),
    )


def _publisher_changes(
    old: Mapping[str, int], new: Mapping[str, int]
) -> tuple[tuple[Publisher, ...], tuple[PublisherChange, ...]]:
    """The streams of ``new`` not in ``old``, and those whose counter moved from ``old``;
    each by stream name."""
    added = []
    published = []
    for stream in sorted(new):
        counter = new[stream]
        before = old.get(stream)  # a counter is never None
        if before is None:
            added.append(Publisher(stream, counter))
        elif before != counter:
            published.append(PublisherChange(stream, Change(before, counter)))
    return tuple(added), tuple(published)


def _subscription_changes(
    old: Mapping[str, Subscription], new: Mapping[str, Subscription]
) -> tuple[tuple[Subscription, ...], tuple[SubscriptionChange, ...]]:
    """The subscriptions of ``new`` not in ``old``, and what changed in the others
    (`_subscription_change`); each by topic."""
    added = []
    changed = []
    for topic in sorted(new):
        subscription = new[topic]
        if topic not in old:
            added.append(subscription)
        elif (change := _subscription_change(old[topic], subscription)) is not None:
            changed.append(change)
    return tuple(added), tuple(changed)


def _removed(old: Mapping[str, object], new: Mapping[str, object], added: int) -> tuple[str, ...]:
    """The names of ``old`` that ``new``, which has ``added`` names ``old`` has not, no
    longer has, in order."""
    if len(new) - added == len(old):
        return ()  # the usual case, quickly: ``new`` kept every name of ``old``
    return tuple(sorted(old.keys() - new.keys()))


def _subscription_change(old: Subscription, new: Subscription) -> SubscriptionChange | None:
    """What changed in one subscription; None if nothing did, or only its channel (which
    a report does not show).  Every poll asks it of every subscription of every server,
    so each field is compared once, and a `Change` made only for one that moved."""
    events, counter, callbacks = new.event_count, new.server_counter, new.callback_count
    missed, discarded = new.missed_event_count, new.discarded_event_count
    renewed = (
        None
        if old.last_resubscribed == new.last_resubscribed
        else (old.last_resubscribed, new.last_resubscribed)
    )
    if (
        renewed is None
        and old.event_count == events
        and old.server_counter == counter
        and old.callback_count == callbacks
        and old.missed_event_count == missed
        and old.discarded_event_count == discarded
    ):
        return None  # an idle subscription, quickly
    return SubscriptionChange(
        new.topic,
        None if old.event_count == events else Change(old.event_count, events),
        None if old.server_counter == counter else Change(old.server_counter, counter),
        None if old.callback_count == callbacks else Change(old.callback_count, callbacks),
        None if old.missed_event_count == missed else Change(old.missed_event_count, missed),
        None
        if old.discarded_event_count == discarded
        else Change(old.discarded_event_count, discarded),
        renewed,
    )


def _sorted_entries(
    entries: tuple[NotConnected, ...], exclude: tuple[NotConnected, ...]
) -> tuple[NotConnected, ...]:
    """The ``entries`` whose key (`NotConnected.key`) none of ``exclude`` has, one per key
    (the last), by stream and Tango host."""
    if not entries:
        return ()  # the usual case, quickly
    excluded = {entry.key for entry in exclude}
    kept = {entry.key: entry for entry in entries if entry.key not in excluded}
    return tuple(sorted(kept.values(), key=lambda entry: (entry.stream, entry.tango_host or "")))
