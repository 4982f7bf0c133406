"""Each rule on its own: where its threshold lies, and what its finding says."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.monitor import (
    Change,
    NotConnected,
    Publisher,
    PublisherChange,
    Report,
    Severity,
    Subject,
    Subscription,
    SubscriptionChange,
    rules,
)
from milonga.monitor.diff import WRAP_MARGIN, counter_delta
from milonga.monitor.figures import StreamFigures
from milonga.monitor.stats import SAMPLE_LIMIT, Statistics, summarise

SUB = "dserver/Sub/1"
PUB = "dserver/Pub/1"
X = "a/b/c/x.change"
TOPIC = "tango://h:1/a/b/c/x.idl5_change"
OVERFLOWED = SubscriptionChange(
    TOPIC,
    event_count=Change(40, 16_966),
    server_counter=Change(73, 20_073),
    missed_event_count=Change(0, 1),
)
"""A subscriber that lost 3 074 of 20 000 events, which cppTango counts as one missed."""
STREAM = StreamFigures(
    name=X,
    publisher=PUB,
    subscriber=SUB,
    pushed=50,
    received=20,
    missed=0,
    counters=(50, 20),
    push_gap=100_000.0,
    processing=summarise([300_000] * 5),
    latency=None,
    full_name=f"tango://h:1/{X}",
)


# A slow callback on a stream whose figures cannot tell: its publisher pushed once.
UNDECIDED = STREAM._replace(pushed=1, push_gap=None, latency=summarise([3_100_000]))


@pytest.mark.parametrize(
    ("stream", "latency_before", "words"),
    [
        (UNDECIDED, None, "30 events pushed by dserver/Pub/1 have not reached it yet"),
        (UNDECIDED, 1_800_000, "the median latency of its events rose from 1.80 s to 3.10 s"),
        (UNDECIDED._replace(counters=(50, 50)), 1_800_000, "rose from 1.80 s to 3.10 s"),
        (STREAM._replace(processing=None), None, "no processing time of it was sampled"),
    ],
)
def test_a_slow_callback_holds_while_its_figures_cannot_tell_and_it_is_behind(
    stream: StreamFigures, latency_before: float | None, words: str
) -> None:
    finding = rules.slow_callback_held(stream, latency_before)

    assert finding is not None
    assert (finding.kind, finding.subject) == ("slow-callback", Subject(SUB, X))
    assert words in finding.message
    assert "cannot tell whether its callback is still slower" in finding.message
    assert finding.evidence["lag"] == stream.behind


def test_a_held_slow_callback_names_what_its_figures_lack() -> None:
    finding = rules.slow_callback_held(UNDECIDED, None)

    assert finding is not None
    assert "dserver/Pub/1 pushed it 1 time(s) since the previous snapshot, too few" in (
        finding.message
    )
    assert finding.evidence["push_gap_us"] is None


@pytest.mark.parametrize(
    ("stream", "latency_before"),
    [
        # Figures that tell: the callback is now as fast as the pushes.
        (STREAM._replace(processing=summarise([100_000])), 1_000),
        (STREAM, 1_000),  # they tell it is still slow: slow_callback's to say
        # Not behind: every event received, and no latency rising.
        (UNDECIDED._replace(counters=(50, 50)), None),
        (UNDECIDED._replace(counters=(50, 50)), 4_000_000),
        (UNDECIDED._replace(counters=(50, 50), latency=None), 1_000),
        (UNDECIDED._replace(counters=(3, 50)), 1_000_000_000),  # a restart: ahead, not behind
    ],
)
def test_a_slow_callback_is_not_held_once_its_figures_tell_or_it_caught_up(
    stream: StreamFigures, latency_before: float | None
) -> None:
    assert rules.slow_callback_held(stream, latency_before) is None


def latencies(*ranges: tuple[int, int]) -> list[Statistics]:
    """The latency statistics of polls whose events took from ``low`` to ``high`` μs."""
    return [summarise([low, (low + high) // 2, high]) for low, high in ranges]


GROWING = latencies(
    (100, 3_000_000), (3_400_000, 6_200_000), (6_600_000, 9_600_000), (10_000_000, 13_000_000)
)


def test_a_callback_slower_than_the_pushes_is_a_slow_callback() -> None:
    finding = rules.slow_callback(STREAM)

    assert finding is not None
    assert (finding.kind, finding.severity) == ("slow-callback", Severity.WARNING)
    assert finding.subject == Subject(SUB, X)
    assert finding.evidence["processing_median_us"] == 300_000
    assert finding.evidence["push_gap_us"] == 100_000
    for words in (SUB, X, PUB, "300 ms", "100 ms", "Every other subscription of"):
        assert words in finding.message


def test_a_callback_as_fast_as_the_pushes_is_not_slow() -> None:
    assert rules.slow_callback(STREAM._replace(processing=summarise([100_000]))) is None
    assert rules.slow_callback(STREAM._replace(push_gap=None)) is None
    assert rules.slow_callback(STREAM._replace(processing=None)) is None


def test_latency_growing_without_overlap_while_callbacks_keep_the_thread_busy() -> None:
    slowest = (X, summarise([300_000]))

    finding = rules.growing_latency(SUB, GROWING, 0.97, slowest)

    assert finding is not None
    assert finding.subject == Subject(SUB, X)
    assert finding.evidence["latency_minimum_us"] == 10_000_000
    assert finding.evidence["latency_maximum_before_us"] == 6_200_000
    assert "rose at each of the last 3 snapshots" in finding.message
    assert "97%" in finding.message


@pytest.mark.parametrize(
    ("history", "busy"),
    [
        (GROWING[1:], 0.97),  # only two rises so far
        (GROWING, 0.5),  # the callbacks are not what keeps the thread busy
        (GROWING, None),  # no interval to compare with
        ([*GROWING[:3], summarise([6_000_000, 14_000_000])], 0.97),  # overlaps 2 polls before
        ([*GROWING[:2], GROWING[3], GROWING[2]], 0.97),  # fell at the last poll
    ],
)
def test_latency_that_does_not_clearly_grow_is_no_finding(
    history: list[Statistics], busy: float | None
) -> None:
    assert rules.growing_latency(SUB, history, busy, None) is None


def test_latency_growth_without_a_named_stream_is_about_the_server() -> None:
    finding = rules.growing_latency(SUB, GROWING, 0.9, None)

    assert finding is not None
    assert finding.subject == Subject(SUB)


@pytest.mark.parametrize(
    ("lags", "severity"),
    [
        ([0, 1, 2, 3], Severity.WARNING),
        ([5, 0, 10, 20, 30], Severity.WARNING),  # rose by 30, more than twice the fall of 5
        ([5, 0, 1, 2, 3], None),  # rose by 3: the fall of 5 shows wobble that wide
        ([0, 8, 1, 3, 5, 7], None),  # rose by 6: within twice the fall of 7
        ([10, 500, 1000, 1001], Severity.WARNING),  # past the ZeroMQ high-water mark
        ([2000, 3000, 4000, 5475], Severity.WARNING),  # a real lag that lost no event
        ([0, 1, 2, 2], None),  # stopped growing
        ([0, 1, 2], None),  # grew at two polls only
        ([-3, -2, -1, 0], None),  # not behind
    ],
)
def test_falling_behind_needs_a_lag_that_grew_at_each_of_three_polls(
    lags: list[int], severity: Severity | None
) -> None:
    finding = rules.falling_behind(STREAM, rules.Lags.of(lags))

    assert (finding and finding.severity) == severity
    if finding is not None:
        assert finding.subject == Subject(SUB, X)
        assert finding.evidence["lag"] == lags[-1]
        assert " -> ".join(map(str, lags[-4:])) in finding.message


def test_falling_behind_claims_no_drop_that_did_not_happen() -> None:
    """Events behind are held in ZeroMQ's queues and the socket buffers: those dropped
    are missed-events' to tell."""
    finding = rules.falling_behind(STREAM, rules.Lags.of([2000, 3000, 4000, 5475]))

    assert finding is not None
    assert "being dropped" not in finding.message
    assert "late, not lost, while these have room" in finding.message
    assert set(finding.evidence) == {
        *("lag", "lag_before", "lag_fall_seen", "pushed", "received", "publisher")
    }


@pytest.mark.parametrize(
    ("cause", "words"),
    [
        (rules.MissedCause.PUBLISHER_RESTARTED, "Its publisher restarted"),
        (rules.MissedCause.CONSUMER_TOO_SLOW, "more slowly than it is pushed"),
        (rules.MissedCause.UNKNOWN, "Either its publisher restarted, or it fell"),
    ],
)
def test_missed_events_say_how_many_and_why(cause: rules.MissedCause, words: str) -> None:
    finding = rules.missed_events(SUB, OVERFLOWED, cause)

    assert (finding.kind, finding.severity) == ("missed-events", Severity.ERROR)
    assert finding.subject == Subject(SUB, X)
    assert "lost 3074 event(s) of a/b/c/x.change in 1 gap(s) of the server counter" in (
        finding.message
    )
    assert words in finding.message
    assert finding.evidence == {"gaps": 1, "events_lost": 3074, "cause": cause.value}


@pytest.mark.parametrize(
    ("counter", "events", "discarded", "lost"),
    [
        # The recorded overflow: cppTango counted one gap for 3 074 events lost.
        (Change(73, 20_073), Change(40, 16_966), None, 3074),
        # Discarded events arrived: they are not lost.
        (Change(0, 10), Change(0, 5), Change(0, 3), 2),
        # Never fewer than the gaps cppTango saw.
        (Change(0, 5), Change(0, 5), None, 1),
        # A counter that went down no longer compares.
        (Change(500, 3), Change(500, 3), None, None),
        (Change(5, 9), Change(9, 2), None, None),
    ],
)
def test_events_lost_are_the_counter_rise_less_the_events_that_arrived(
    counter: Change, events: Change, discarded: Change | None, lost: int | None
) -> None:
    change = SubscriptionChange(
        TOPIC,
        event_count=events,
        server_counter=counter,
        missed_event_count=Change(0, 1),
        discarded_event_count=discarded,
    )

    assert rules.events_lost(change) == lost


def test_missed_events_whose_number_is_unknown_say_so() -> None:
    change = SubscriptionChange(
        TOPIC, server_counter=Change(500, 3), missed_event_count=Change(2, 4)
    )

    finding = rules.missed_events(SUB, change, rules.MissedCause.PUBLISHER_RESTARTED)

    assert "lost events of a/b/c/x.change in 2 gap(s)" in finding.message
    assert "how many is unknown" in finding.message
    assert finding.evidence["events_lost"] is None


def _subscription(topic: str) -> Subscription:
    return Subscription(topic, PUB, 1, 0, 0, 0, 0, None)


ADDED = rules.ChurnStep.of(Report(new_subscriptions=(_subscription("a/b/c/x.idl5_change"),)))
REMOVED = rules.ChurnStep.of(Report(removed_subscriptions=("a/b/c/x.idl5_change",)))
FEWER_CALLBACKS = rules.ChurnStep.of(
    Report(subscription_changes=(SubscriptionChange("t", callback_count=Change(2, 1)),))
)


@pytest.mark.parametrize(
    ("steps", "churning"),
    [
        ([REMOVED, ADDED, REMOVED], True),
        ([REMOVED, rules.ChurnStep(), ADDED, REMOVED], True),
        ([FEWER_CALLBACKS, ADDED, FEWER_CALLBACKS], True),
        ([REMOVED, ADDED, REMOVED, ADDED], True),  # at 2 of the last 4
        ([REMOVED, ADDED, REMOVED, ADDED, ADDED], False),  # at 1 of the last 4
        ([ADDED, REMOVED], False),  # a scan that subscribed once, then unsubscribed
        ([REMOVED, ADDED], False),  # a subscription made again, once
        ([ADDED, ADDED, ADDED], False),  # a start-up that only adds
        ([REMOVED, REMOVED, rules.ChurnStep()], False),  # it stopped
        ([REMOVED], False),  # once is no churn
    ],
)
def test_churn_is_subscriptions_changing_poll_after_poll_with_removals_that_repeat(
    steps: list[rules.ChurnStep], churning: bool
) -> None:
    finding = rules.subscription_churn(SUB, steps, None)

    assert (finding is not None) == churning
    if finding is not None:
        assert finding.subject == Subject(SUB)


def test_a_churn_step_counts_subscriptions_and_callbacks() -> None:
    step = rules.ChurnStep.of(
        Report(
            new_subscriptions=(_subscription("t1"), _subscription("t2")),
            removed_subscriptions=("t3",),
            subscription_changes=(
                SubscriptionChange("t4", callback_count=Change(1, 3)),
                SubscriptionChange("t5", callback_count=Change(2, 1)),
                SubscriptionChange("t6", event_count=Change(2, 9)),
            ),
        )
    )

    assert step == rules.ChurnStep(added=2, removed=1, callbacks_added=2, callbacks_removed=1)


def wakes(counts: list[int], heartbeats: float) -> rules.Wakes:
    return rules.Wakes(summarise(counts), heartbeats)


@pytest.mark.parametrize(
    ("counts", "heartbeats", "woken"),
    [
        ([1] * 18 + [2, 2], 0.0, False),  # 2 extra wake-ups for 20 events: a tenth, not more
        ([1] * 17 + [2, 2, 2], 0.0, True),
        ([1] * 17 + [2, 2, 2], 1.5, False),  # heartbeats explain some of them
        ([1] * 8 + [3], 0.0, False),  # too few samples to tell
        ([1] * 100, 0.0, False),
    ],
)
def test_wake_ups_beyond_heartbeats_for_more_than_a_tenth_of_the_events_are_churn(
    counts: list[int], heartbeats: float, woken: bool
) -> None:
    finding = rules.subscription_churn(SUB, [], wakes(counts, heartbeats))

    assert (finding is not None) == woken
    if finding is not None:
        assert finding.evidence["extra_wakes"] == 3


def waiting(stream: str = "x") -> NotConnected:
    return NotConnected("tango://h:1/a/b/c", stream, "change", "2026-03-17T12:00:00", "h:1")


def test_a_subscription_waits_longer_than_a_heartbeat_period_before_it_is_a_finding() -> None:
    assert rules.not_connected(SUB, waiting(), rules.HEARTBEAT_SECONDS) is None

    finding = rules.not_connected(SUB, waiting(), 10.5)

    assert finding is not None
    assert finding.subject == Subject(SUB, "a/b/c/x.change")
    assert "waiting 10 s" in finding.message or "waiting 11 s" in finding.message
    assert finding.evidence["waited_seconds"] == 10.5


def test_a_server_not_answering_names_the_first_line_of_the_error() -> None:
    finding = rules.server_not_answering(SUB, "API_DeviceNotExported: gone\nAPI_Other: more", 3)

    assert finding.severity is Severity.ERROR
    assert "did not answer 3 snapshot(s) in a row: API_DeviceNotExported: gone." in finding.message
    assert "API_Other" not in finding.message
    assert finding.evidence == {"polls": 3, "error": "API_DeviceNotExported: gone"}


DOWN = PublisherChange("tango://h:1/a/b/c/x.change", Change(10, 2))
UP = PublisherChange("tango://h:1/a/b/c/y.change", Change(2, 10))
WRAPPED = PublisherChange("tango://h:1/a/b/c/y.change", Change(2**32 - 3, 5))


def test_a_publisher_whose_counters_went_down_and_none_rose_restarted() -> None:
    report = Report(published=(DOWN,), went_down=(DOWN.stream,))

    finding = rules.server_restarted(PUB, report, 0)

    assert finding is not None
    assert "1 of its counters went down (a/b/c/x.change) and none rose" in finding.message
    assert finding.evidence == {"counters_down": 1, "silent_polls": 0}


@pytest.mark.parametrize("changes", [(DOWN, UP), (DOWN, WRAPPED), (WRAPPED,)])
def test_a_counter_that_went_down_while_another_rose_is_no_restart(
    changes: tuple[PublisherChange, ...],
) -> None:
    """A restart starts every counter again; one stream's counter may start again alone,
    and a counter that wrapped past 2**32 rose."""
    assert rules.server_restarted(PUB, Report(published=changes), 0) is None


def test_a_subscriber_back_after_silent_polls_with_lower_counts_restarted() -> None:
    topic = "tango://h:1/a/b/c/x.idl5_change"
    report = Report(
        subscription_changes=(SubscriptionChange(topic, event_count=Change(9, 1)),),
        went_down=(topic,),
    )

    assert rules.server_restarted(SUB, report, 0) is None  # dropped and subscribed again
    finding = rules.server_restarted(SUB, report, 2)
    assert finding is not None
    assert "after 2 snapshot(s) without an answer" in finding.message


def test_counters_that_only_rise_are_no_restart() -> None:
    assert rules.server_restarted(PUB, Report(published=(UP,)), 3) is None


@pytest.mark.parametrize(
    ("samples", "events", "shared"),
    [
        (4, 10, True),
        (5, 10, False),  # half of them
        (0, 2, False),  # within the slack of a push under way
        (0, 3, True),
        (SAMPLE_LIMIT - 1, 10_000, True),
        (SAMPLE_LIMIT, 10_000, False),  # a full buffer lost the rest itself
    ],
)
def test_samples_far_fewer_than_the_events_are_shared(
    samples: int, events: int, shared: bool
) -> None:
    finding = rules.samples_shared(PUB, "server", samples, events)

    assert (finding is not None) == shared


def test_events_since_the_previous_answer_come_from_the_counters() -> None:
    report = Report(
        new_publishers=(Publisher("s1", 4),),
        published=(PublisherChange("s2", Change(10, 15)), DOWN),
        new_subscriptions=(replace(_subscription("t1"), event_count=3, discarded_event_count=1),),
        subscription_changes=(
            SubscriptionChange("t2", event_count=Change(5, 8), discarded_event_count=Change(0, 2)),
            SubscriptionChange("t3", event_count=Change(9, 0)),
        ),
    )

    assert rules.events_pushed(report) == 4 + 5
    assert rules.events_received(report) == 3 + 1 + 3 + 2


@given(st.lists(st.integers(-2000, 2000), min_size=2, max_size=8), st.integers(0, 2000))
def test_a_lag_that_did_not_rise_at_the_last_poll_is_never_falling_behind(
    lags: list[int], drop: int
) -> None:
    lags.append(lags[-1] - drop)

    assert rules.falling_behind(STREAM, rules.Lags.of(lags)) is None


def falling_behind_at(lags: list[int]) -> list[int]:
    """The polls (from 0) at which falling-behind holds on a stream with ``lags``."""
    history = rules.Lags()
    fired = []
    for poll, lag in enumerate(lags):
        history.add(lag)
        if rules.falling_behind(STREAM, history) is not None:
            fired.append(poll)
    return fired


@given(
    st.integers(1, 2000),
    st.lists(st.lists(st.floats(0, 1), max_size=rules.BAND_POLLS - 2), min_size=1, max_size=6),
)
def test_a_lag_that_wobbles_within_a_band_it_has_shown_is_never_falling_behind(
    band: int, wobbles: list[list[float]]
) -> None:
    """The query skew moves a healthy lag within a band; once the lag has been at both
    edges within the last `rules.BAND_POLLS` polls, nothing inside it is growth."""
    lags = [
        lag for wobble in wobbles for lag in [band, 0, *(round(band * share) for share in wobble)]
    ]

    assert falling_behind_at(lags) == []


@pytest.mark.parametrize(
    ("lags", "fires_at"),
    [
        # caught up, then slowed down again
        ([0, 5000, 10000, 15000, 0, 0, 5000, 10000, 15000], [3, 8]),
        # a catch-up over two polls
        ([0, 5000, 10000, 15000, 7000, 0, 0, 5000, 10000, 15000], [3, 9]),
        # the buffers overflowed: events dropped make the lag fall, then it grows again
        ([0, 6000, 12000, 17000, 2000, 8000, 14000, 17000, 3000, 9000, 15000, 20000], [3, 7, 11]),
    ],
)
def test_a_lag_that_grows_again_after_a_catch_up_or_an_overflow_is_falling_behind(
    lags: list[int], fires_at: list[int]
) -> None:
    """A fall that ends a growth is no wobble: it does not hide the next growth."""
    assert falling_behind_at(lags) == fires_at


def test_an_early_dip_of_the_lag_is_forgotten_after_a_band_of_polls() -> None:
    """A fall of 300 hides a growth of 100 a poll only while it is recent."""
    lags = [0, 400, 100, *range(200, 100 * (rules.BAND_POLLS + 6), 100)]
    fired = falling_behind_at(lags)

    assert fired[0] == 2 + rules.BAND_POLLS  # the fall at poll 2, forgotten
    assert fired == list(range(fired[0], len(lags)))


@given(
    st.integers(0, 2000),
    st.integers(0, 200),
    st.lists(st.floats(0, 1), min_size=4, max_size=40),
)
def test_a_lag_that_grows_by_more_than_its_wobble_each_poll_is_falling_behind(
    band: int, more: int, wobble: list[float]
) -> None:
    """A subscriber that takes events in more slowly than they come gets further behind
    at every poll: by more than the query skew moves the lag, it is falling behind from
    its fourth poll on, whatever the wobble before."""
    growth = band + more + 1
    lags = [growth * i + round(band * share) for i, share in enumerate(wobble)]
    assert falling_behind_at(lags) == list(range(rules.GROWTH_POLLS, len(lags)))


@pytest.mark.parametrize(
    ("before", "after", "delta"),
    [
        (2**32 - 3, 5, 8),  # wrapped
        (5, 2**32 - 3, -8),  # wrapped the other way
        (3_000_000_000, 5, 5 - 3_000_000_000),  # started again: no wrap
        (2**32 - WRAP_MARGIN - 1, 5, 5 - (2**32 - WRAP_MARGIN - 1)),
        (2**32 - WRAP_MARGIN, WRAP_MARGIN, WRAP_MARGIN - (2**32 - WRAP_MARGIN)),
        (2**32 - WRAP_MARGIN, WRAP_MARGIN - 1, 2 * WRAP_MARGIN - 1),
        (5, 3_000_000_000, 3_000_000_000 - 5),
    ],
)
def test_a_counter_wraps_only_from_near_2_to_the_32_to_near_0(
    before: int, after: int, delta: int
) -> None:
    assert counter_delta(before, after) == delta
    assert Change(before, after).delta == delta


@pytest.mark.parametrize(
    ("pushed", "received", "lag"),
    [(10, 4, 6), (3, 2**32 - 5, 8), (2**32 - 5, 3, -8)],
)
def test_a_lag_counts_across_a_wrap_of_the_32_bit_counters(
    pushed: int, received: int, lag: int
) -> None:
    assert STREAM._replace(counters=(pushed, received)).lag == lag
