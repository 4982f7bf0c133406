"""Diffing snapshots: the captured story of a real publisher and subscriber, and invariants."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from hypothesis import given

from milonga.monitor import (
    Change,
    ClientPerfSample,
    ClientSide,
    MonitoredServer,
    Poll,
    PollHistory,
    Publisher,
    Reply,
    Report,
    ServerPerfSample,
    ServerSide,
    Snapshot,
    Subscription,
    Unsampled,
    diff,
)
from milonga.monitor.stats import Metric
from tests.monitor.data import COUNTER_STREAM, COUNTER_TOPIC, snapshot
from tests.monitor.strategies import snapshots


def test_in_a_first_snapshot_everything_is_new() -> None:
    report = diff(None, snapshot("publisher_1.json"))

    assert report.new_publishers == (Publisher(COUNTER_STREAM, 0),)
    assert report.published == ()
    assert report.removed_publishers == ()
    assert report.server_perf is None  # perf on, but no samples yet


def test_published_events_show_the_counter_moving() -> None:
    report = diff(snapshot("publisher_1.json"), snapshot("publisher_2.json"))

    (change,) = report.published
    assert (change.stream, change.counter) == (COUNTER_STREAM, Change(0, 120))
    assert report.server_perf is not None
    assert report.went_down == ()


def test_a_restarted_publisher_shows_its_counter_going_down() -> None:
    report = diff(snapshot("publisher_2.json"), snapshot("publisher_3.json"))

    (change,) = report.published
    assert change.counter == Change(120, 5)
    assert change.counter.delta == -115
    assert report.went_down == (COUNTER_STREAM,)


def test_a_waiting_subscription_connects() -> None:
    report = diff(snapshot("subscriber_waiting.json"), snapshot("subscriber_1.json"))

    assert [s.topic for s in report.new_subscriptions] == [COUNTER_TOPIC]
    assert [e.stream for e in report.connected_again] == ["test/monitor/counter/value.change"]
    assert report.not_connected == ()


def test_received_events_change_only_the_fields_that_moved() -> None:
    report = diff(snapshot("subscriber_1.json"), snapshot("subscriber_2.json"))

    (change,) = report.subscription_changes
    assert change.event_count == Change(0, 120)
    assert change.server_counter == Change(0, 120)
    assert change.discarded_event_count == Change(0, 2)
    assert change.callback_count is None
    assert change.missed_event_count is None
    assert change.last_resubscribed is None
    assert report.client_perf is not None


def test_the_subscriber_sees_the_publisher_restart_in_its_server_counter() -> None:
    report = diff(snapshot("subscriber_2.json"), snapshot("subscriber_3.json"))

    (change,) = report.subscription_changes
    assert change.server_counter == Change(120, 5)
    assert change.event_count == Change(120, 125)
    assert report.went_down == ()  # its own counts went on: it did not restart


def test_last_resubscribed_and_callbacks_are_reported() -> None:
    before = snapshot("subscriber_2.json")
    assert before.client is not None
    renewed = dataclasses.replace(
        before.client.subscriptions[COUNTER_TOPIC],
        last_resubscribed="2026-03-17T12:00:00",
        callback_count=0,
    )
    after = dataclasses.replace(
        before,
        client=dataclasses.replace(before.client, subscriptions={COUNTER_TOPIC: renewed}),
    )

    (change,) = diff(before, after).subscription_changes

    assert change.last_resubscribed == (None, "2026-03-17T12:00:00")
    assert change.callback_count == Change(1, 0)
    assert change.event_count is None


def _publishers(snap: Snapshot) -> dict[str, int]:
    return dict(snap.server.publishers) if snap.server else {}


def _subscriptions(snap: Snapshot) -> dict[str, Subscription]:
    return dict(snap.client.subscriptions) if snap.client else {}


@given(snapshots())
def test_a_snapshot_compared_with_itself_shows_nothing(snap: Snapshot) -> None:
    assert diff(snap, snap) == Report()
    assert diff(snap, snap).is_empty


@given(snapshots())
def test_without_a_previous_snapshot_everything_is_new(snap: Snapshot) -> None:
    report = diff(None, snap)

    assert {p.stream: p.counter for p in report.new_publishers} == _publishers(snap)
    assert {s.topic: s for s in report.new_subscriptions} == _subscriptions(snap)
    assert report.published == ()
    assert report.subscription_changes == ()
    assert report.removed_publishers == ()
    assert report.removed_subscriptions == ()


@given(snapshots(), snapshots())
def test_publishers_are_rebuilt_from_the_previous_snapshot_and_the_report(
    before: Snapshot, after: Snapshot
) -> None:
    report = diff(before, after)

    rebuilt = {
        stream: counter
        for stream, counter in _publishers(before).items()
        if stream not in report.removed_publishers
    }
    rebuilt.update((p.stream, p.counter) for p in report.new_publishers)
    for change in report.published:
        assert rebuilt[change.stream] == change.counter.before
        rebuilt[change.stream] = change.counter.after
    assert rebuilt == _publishers(after)
    assert all(change.counter.delta != 0 for change in report.published)


@given(snapshots(), snapshots())
def test_subscriptions_are_rebuilt_from_the_previous_snapshot_and_the_report(
    before: Snapshot, after: Snapshot
) -> None:
    report = diff(before, after)

    rebuilt = {
        topic: subscription
        for topic, subscription in _subscriptions(before).items()
        if topic not in report.removed_subscriptions
    }
    rebuilt.update((s.topic, s) for s in report.new_subscriptions)
    for change in report.subscription_changes:
        fields = {
            name: moved.after
            for name in (
                "event_count",
                "server_counter",
                "callback_count",
                "missed_event_count",
                "discarded_event_count",
            )
            if (moved := getattr(change, name)) is not None
        }
        if change.last_resubscribed is not None:
            fields["last_resubscribed"] = change.last_resubscribed[1]
        assert fields, "a reported change changes something"
        rebuilt[change.topic] = dataclasses.replace(rebuilt[change.topic], **fields)
    assert rebuilt == _subscriptions(after)


@given(snapshots(), snapshots())
def test_counters_going_down_are_flagged(before: Snapshot, after: Snapshot) -> None:
    report = diff(before, after)

    old, new = _publishers(before), _publishers(after)
    old_subs, new_subs = _subscriptions(before), _subscriptions(after)
    expected = {s for s in old.keys() & new.keys() if new[s] < old[s]}
    expected |= {
        t
        for t in old_subs.keys() & new_subs.keys()
        if new_subs[t].event_count < old_subs[t].event_count
    }
    assert set(report.went_down) == expected


@given(snapshots(), snapshots())
def test_waiting_subscriptions_appear_and_clear(before: Snapshot, after: Snapshot) -> None:
    report = diff(before, after)

    old = {e.key for e in before.client.not_connected} if before.client else set()
    new = {e.key for e in after.client.not_connected} if after.client else set()
    assert {e.key for e in report.not_connected} == new - old
    assert {e.key for e in report.connected_again} == old - new


def _sampled(gaps: list[int] | None) -> Snapshot:
    """A process whose two sides took samples with these gaps (None: sampling off)."""
    server = None if gaps is None else tuple(ServerPerfSample(gap, 20) for gap in gaps)
    client = (
        None
        if gaps is None
        else tuple(ClientPerfSample("value", gap, 10, 50, 200, 1, 1, False) for gap in gaps)
    )
    return Snapshot(ServerSide({}, server), ClientSide({}, (), {}, client))


def _gap_counts(report: Report) -> tuple[int, int] | None:
    """How many gaps each side's table counts, after checking that none is the long one."""
    if report.server_perf is None or report.client_perf is None:
        return None
    gaps = [report.server_perf.rows[0], report.client_perf.rows[0]]
    assert [row.metric for row in gaps] == [Metric.EVENT_GAPS, Metric.EVENT_GAPS]
    assert all(row.statistics.maximum == 100_000 for row in gaps)
    return gaps[0].statistics.count, gaps[1].statistics.count


def test_the_first_gap_after_sampling_is_turned_on_is_left_out_however_late_it_comes() -> None:
    server = MonitoredServer("dserver/Pub/1")
    history = PollHistory()
    # Sampling was off for a while before each start: the first gap spans that time.
    story = [
        [],  # sampling just turned on, no event yet
        [9_000_000, 100_000, 100_000],  # the first sample spans the time it was off
        [100_000],  # an ordinary gap, even as the first of a snapshot
        None,  # sampling off again (a restart, or another monitor that stopped)
        [4_000_000, 100_000],
    ]

    counts = []
    for gaps in story:
        poll = Poll(datetime(2026, 3, 17), (Reply(server, {}, _sampled(gaps), None),))
        (entry,) = history.add(poll).entries
        assert entry.report is not None
        counts.append(_gap_counts(entry.report))

    assert counts == [None, (2, 2), (1, 1), None, (1, 1)]


def test_without_history_a_side_without_samples_before_counts_as_just_turned_on() -> None:
    before_off, before_empty, before_on = _sampled(None), _sampled([]), _sampled([100_000])
    current = _sampled([100_000, 100_000])

    assert _gap_counts(diff(before_off, current)) == (1, 1)
    assert _gap_counts(diff(before_empty, current)) == (1, 1)
    assert _gap_counts(diff(None, current)) == (1, 1)
    assert _gap_counts(diff(before_on, current)) == (2, 2)
    assert _gap_counts(diff(before_empty, current, Unsampled(False, False))) == (2, 2)


def test_sampling_state_follows_each_side() -> None:
    turned_on = Unsampled()
    client_only = Snapshot(None, ClientSide({}, (), {}, ()))

    assert turned_on.after(_sampled([])) == Unsampled(True, True)
    assert turned_on.after(_sampled([5])) == Unsampled(False, False)
    assert Unsampled(False, False).after(_sampled([])) == Unsampled(False, False)
    assert Unsampled(False, False).after(_sampled(None)) == Unsampled(True, True)
    assert Unsampled(False, False).after(client_only) == Unsampled(True, False)
