"""The findings engine: on polls recorded from real servers (a demo run, and one scenario
per kind in ``data/findings``, see its ``record.py``), on built polls, and as
properties: a healthy idle system has no finding, and every finding clears once its
cause stops."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from milonga.monitor import (
    Cleared,
    Diagnostician,
    Finding,
    Findings,
    Poll,
    PollHistory,
    PollReport,
    Severity,
    Subject,
    findings_of,
)
from milonga.monitor.figures import poll_figures
from milonga.monitor.jsonl import PollRecordError, poll_record, read_polls
from tests.monitor.strategies import (
    HOST,
    PUB,
    SUB,
    WAITING,
    client_sample,
    idle_systems,
    poll_of,
    publisher_reply,
    server_sample,
    subscriber_reply,
    subscription,
    turbulent_then_calm,
)

DEMO = Path(__file__).parent.parent / "demo" / "data"
RECORDED = Path(__file__).parent / "data" / "findings"
TOP = "dserver/MyServer/top"
POSITION = "foo/bar/hw/position.change"
STREAM = f"{HOST}a/b/c/x.change"
TOPIC = f"{HOST}a/b/c/x.idl5_change"
X = "a/b/c/x.change"


def kinds(findings: Findings) -> list[tuple[str, Subject]]:
    return [(finding.kind, finding.subject) for finding in findings.active]


def held(run: Sequence[Findings], kind: str) -> list[int]:
    """The polls of ``run`` at which a finding of ``kind`` held."""
    return [i for i, findings in enumerate(run) if any(f.kind == kind for f in findings.active)]


def only(run: Sequence[Findings], kind: str) -> list[Finding]:
    """The findings of ``kind`` in ``run``, poll after poll."""
    return [f for findings in run for f in findings.active if f.kind == kind]


def number(finding: Finding, key: str) -> float:
    """The figure ``key`` of ``finding``'s evidence, which must be a number."""
    value = finding.evidence[key]
    assert isinstance(value, int | float), (key, value)
    return value


def recorded(kind: str) -> list[Findings]:
    return findings_of(read_polls(RECORDED / f"{kind}.jsonl"))


def short(server: str) -> str:
    """An admin device without its ``tango://host:port/`` prefix, as the recordings
    name their servers by TRL."""
    return server.rpartition(":")[2].partition("/")[2]


# The demo run, recorded from real servers.


def reports(polls: Sequence[Poll]) -> list[PollReport]:
    history = PollHistory()
    return [history.add(poll) for poll in polls]


def test_the_demo_without_the_scheduler_shows_a_slow_callback_until_the_end() -> None:
    polls = read_polls(DEMO / "plain.jsonl")
    run = findings_of(polls)

    assert not run[0].active
    # Processing against push gap while HW pushes (polls 1-3), then the latency of TOP
    # that keeps growing while it works through its queue (4-8), without a gap: TOP is
    # behind on a stream until poll 8, and every event has arrived from then on.
    assert held(run, "slow-callback") == list(range(1, 9))
    assert [any(s.behind for s in poll_figures(r).streams) for r in reports(polls)] == [
        *[False, True, True, True, True, True, True, True],
        *[False, False],
    ]
    assert {f.subject for f in only(run, "slow-callback")} == {Subject(TOP, POSITION)}
    assert "300 ms to handle one event" in only(run, "slow-callback")[0].message
    assert held(run, "falling-behind") == [3]  # the lag grew 0 -> 32 -> 66 -> 80
    assert {f.kind for findings in run for f in findings.active} == {
        "slow-callback",
        "falling-behind",
    }
    (cleared,) = run[-1].cleared
    assert cleared.finding.kind == "slow-callback"
    assert (cleared.since, cleared.polls) == (run[1].time, 8)


def test_the_demo_with_the_scheduler_has_no_finding() -> None:
    run = findings_of(read_polls(DEMO / "fixed.jsonl"))

    assert all(not findings.active and not findings.cleared for findings in run)


# One recording per kind: healthy polls, the cause, healthy polls again.


def test_recorded_slow_callback() -> None:
    """steady x3, slow_consumer x5 (one event handled per poll, ten pushed), steady x3."""
    run = recorded("slow-callback")

    assert held(run, "slow-callback") == [3, 4, 5, 6, 7]
    assert {short(f.subject.server) for f in only(run, "slow-callback")} == {
        "dserver/FindingsSlow/1"
    }
    assert held(run, "falling-behind") == [5, 6, 7]
    assert {c.finding.kind for c in run[8].cleared} == {"slow-callback", "falling-behind"}
    assert not any(findings.active for findings in run[8:])


def test_recorded_falling_behind_without_samples() -> None:
    """steady x2, slow_consumer x6, steady x2, with sampling off everywhere."""
    run = recorded("falling-behind")

    assert held(run, "falling-behind") == [4, 5, 6, 7]
    lags = [number(f, "lag") for f in only(run, "falling-behind")]
    assert lags == sorted(lags)
    assert all(f.severity is Severity.WARNING for f in only(run, "falling-behind"))
    assert [c.finding.kind for c in run[8].cleared] == ["falling-behind"]
    assert {f.kind for findings in run for f in findings.active} == {"falling-behind"}


def test_recorded_missed_events_are_put_down_to_the_slow_consumer() -> None:
    """steady x2, slow_consumer x4, an overflow of the ZeroMQ buffer, steady x2."""
    run = recorded("missed-events")

    (missed,) = only(run, "missed-events")
    assert missed.evidence["cause"] == "consumer-too-slow"
    # cppTango counted one gap in the server counter for 3 074 events lost: its last
    # received counter rose by 20 000, and 16 926 events arrived.
    assert (missed.evidence["gaps"], missed.evidence["events_lost"]) == (1, 3074)
    lost = "lost 3074 event(s) of test/findings/pusher/level.change in 1 gap(s)"
    assert lost in missed.message
    assert held(run, "missed-events") == [7]
    # On the way to it, the lag went far past the ZeroMQ high-water mark before a single
    # event was lost: a warning, not an error.
    assert number(only(run, "falling-behind")[-1], "lag") > 10_000
    assert {f.severity for f in only(run, "falling-behind")} == {Severity.WARNING}
    assert [c.finding.kind for c in run[8].cleared] == ["missed-events"]


def test_recorded_subscription_churn() -> None:
    """steady x3, churning x4 (an unsubscribe or a subscribe before each poll), steady x3."""
    run = recorded("subscription-churn")

    # From the second churning poll; the first steady one may still show the churner's
    # last subscription, made as the churning stopped.
    churning = held(run, "subscription-churn")
    assert churning in ([4, 5, 6], [4, 5, 6, 7])
    assert {f.kind for findings in run for f in findings.active} == {"subscription-churn"}
    assert [c.finding.kind for c in run[churning[-1] + 1].cleared] == ["subscription-churn"]


def test_recorded_not_connected_after_a_heartbeat_period() -> None:
    """A poll every second while the waiter's source is not running, then until it is
    connected."""
    polls = read_polls(RECORDED / "not-connected.jsonl")
    run = findings_of(polls)

    first = polls[0].time
    late = [i for i, poll in enumerate(polls) if (poll.time - first).total_seconds() > 10]
    waiting = held(run, "not-connected")
    assert waiting
    assert waiting[0] == late[0]
    assert waiting == list(range(waiting[0], waiting[-1] + 1))
    assert [c.finding.kind for c in run[waiting[-1] + 1].cleared] == ["not-connected"]
    assert {f.subject.stream for f in only(run, "not-connected")} == {
        "test/findings/absent/level.change"
    }


def test_recorded_server_not_answering() -> None:
    """idle x2, a frozen server x3, idle x2."""
    run = recorded("server-not-answering")

    assert held(run, "server-not-answering") == [2, 3, 4]
    assert [f.evidence["polls"] for f in only(run, "server-not-answering")] == [1, 2, 3]
    assert [c.polls for c in run[5].cleared] == [3]


def test_recorded_server_restarted() -> None:
    """publishing x2, a restart, publishing x2, a restart with a poll while it is
    stopped, publishing x2."""
    run = recorded("server-restarted")

    restarts = only(run, "server-restarted")
    assert len(restarts) == 2
    assert [f.evidence["silent_polls"] for f in restarts] == [
        0,
        held(run, "server-not-answering").__len__(),
    ]
    assert held(run, "server-restarted")[0] == 2
    assert not run[-1].active


def test_recorded_samples_shared() -> None:
    """steady x3, another client querying too x3, steady x3: in every server."""
    run = recorded("samples-shared")

    assert held(run, "samples-shared") == [3, 4, 5]
    assert all(number(f, "samples") < number(f, "events") for f in only(run, "samples-shared"))
    assert len(run[6].cleared) == len(run[5].active)
    assert {f.kind for findings in run for f in findings.active} == {"samples-shared"}


# Built polls, for what the recordings do not show.


def pub_sub(
    seconds: float, pushed: int, received: int, *, missed: int = 0, pub: bool = True
) -> Poll:
    """A poll of a publisher of `STREAM` and its subscriber, which missed ``missed``."""
    replies = {SUB: subscriber_reply({TOPIC: subscription(received, missed=missed)})}
    if pub:
        replies[PUB] = publisher_reply({STREAM: pushed})
    return poll_of(seconds, replies)


def test_missed_events_after_the_publisher_restarted_say_so() -> None:
    run = findings_of([pub_sub(0, 100, 100), pub_sub(5, 3, 3, missed=4)])

    (missed,) = only(run, "missed-events")
    assert missed.evidence == {"gaps": 4, "events_lost": None, "cause": "publisher-restarted"}
    assert held(run, "server-restarted") == [1]


def test_missed_events_of_an_unwatched_publisher_name_both_causes() -> None:
    run = findings_of([pub_sub(0, 0, 100, pub=False), pub_sub(5, 0, 150, missed=2, pub=False)])

    (missed,) = only(run, "missed-events")
    assert missed.evidence["cause"] == "unknown"
    assert missed.subject == Subject(SUB, X)


def test_missed_events_while_falling_behind_blame_the_consumer() -> None:
    polls = [pub_sub(i, 100 * i, 10 * i) for i in range(4)]
    polls.append(pub_sub(4, 400, 40, missed=3))

    run = findings_of(polls)

    assert held(run, "falling-behind") == [3, 4]
    assert only(run, "missed-events")[0].evidence["cause"] == "consumer-too-slow"


def scan_poll(seconds: float, pushed: int, received: int, latency: int | None) -> Poll:
    """A poll of the demo's scan, as `milonga demo --quick` recorded it: a publisher of
    `STREAM`, and a subscriber that handled up to ``received`` at 300 ms per event,
    whose events reached its callback ``latency`` μs after their push (no samples for
    None)."""
    handled = [client_sample("x", 300_000, 300_000, latency)] * 7 if latency else []
    return poll_of(
        seconds,
        {
            PUB: publisher_reply({STREAM: pushed}),
            SUB: subscriber_reply({TOPIC: subscription(received)}, handled),
        },
    )


def test_a_slow_callback_holds_until_the_backlog_is_gone() -> None:
    """The scan pushes 20 events per 2 s poll, then a last one in a poll of its own (too
    few for a push gap), then the subscriber works through its backlog."""
    polls = [
        scan_poll(0, 0, 0, None),
        scan_poll(2, 20, 7, 500_000),
        scan_poll(4, 40, 13, 1_800_000),
        scan_poll(6, 41, 20, 3_100_000),  # a single push
        scan_poll(8, 41, 27, 4_500_000),
        scan_poll(10, 41, 34, 5_800_000),
        scan_poll(12, 41, 41, 7_100_000),  # every event received
        scan_poll(14, 41, 41, None),
    ]

    run = findings_of(polls)

    assert held(run, "slow-callback") == [1, 2, 3, 4, 5, 6]
    still = only(run, "slow-callback")[2]
    assert "is still behind on a/b/c/x.change: 21 events pushed" in still.message
    (cleared,) = run[7].cleared
    assert (cleared.finding.kind, cleared.since, cleared.polls) == ("slow-callback", run[1].time, 6)


def test_a_held_slow_callback_clears_once_its_figures_tell_it_is_fast_enough() -> None:
    """Behind, but the callback now keeps up with the pushes: its cause is shown gone."""
    polls = [
        scan_poll(0, 0, 0, None),
        scan_poll(2, 20, 7, 500_000),
        scan_poll(4, 21, 13, 1_800_000),
        poll_of(
            6,
            {
                PUB: publisher_reply({STREAM: 41}),
                SUB: subscriber_reply(
                    {TOPIC: subscription(33)}, [client_sample("x", 100_000, 1_000, 2_000)] * 20
                ),
            },
        ),
    ]

    assert held(findings_of(polls), "slow-callback") == [1, 2]


def test_the_lag_history_starts_again_when_a_counter_goes_down() -> None:
    lags = [pub_sub(0, 10, 10), pub_sub(1, 20, 15), pub_sub(2, 30, 20)]
    restarted = [pub_sub(3, 5, 0), pub_sub(4, 30, 20), pub_sub(5, 60, 40)]

    run = findings_of(lags + restarted)

    # 0, 5, 10, then the restart: 5, 10, 20 grew again, but only over two polls.
    assert not held(run, "falling-behind")


@pytest.mark.parametrize(
    ("lags", "fires_at"),
    [
        ([0, 5000, 10000, 15000, 0, 0, 5000, 10000, 15000], [3, 8]),  # a catch-up
        ([0, 6000, 12000, 17000, 2000, 8000, 14000, 17000], [3, 7]),  # an overflow
    ],
)
def test_falling_behind_again_after_a_catch_up_or_an_overflow_is_found_again(
    lags: list[int], fires_at: list[int]
) -> None:
    polls = [pub_sub(i, 10_000 * i, 10_000 * i - lag) for i, lag in enumerate(lags)]

    assert held(findings_of(polls), "falling-behind") == fires_at


def test_a_healthy_stream_whose_lag_wobbles_with_the_query_skew_is_not_falling_behind() -> None:
    """1000 events a poll, all received; the subscriber is queried up to 8 events' time
    before its publisher, so the lag is anything from 0 to 8, and now and then rises at
    three polls in a row (here at polls 4-7)."""
    wobble = [3, 8, 0, 5, 1, 2, 4, 7, 6, 0, 8, 2]
    polls = [pub_sub(i, 1000 * i, 1000 * i - lag) for i, lag in enumerate(wobble)]

    assert not held(findings_of(polls), "falling-behind")


def test_counters_that_wrap_past_2_to_the_32_move_on() -> None:
    """cppTango's counters are unsigned 32-bit integers: a wrap is no restart, and the
    subscriber, 600 events behind, wraps a poll later."""
    counters = [(2**32 - 2500 + 1000 * i) % 2**32 for i in range(6)]
    polls = [pub_sub(i, counter, (counter - 600) % 2**32) for i, counter in enumerate(counters)]

    run = findings_of(polls)

    assert [findings.active for findings in run] == [()] * len(polls)


def test_one_publisher_counter_going_down_among_others_is_no_restart() -> None:
    other = STREAM.replace("/x.", "/y.")
    polls = [
        poll_of(0, {PUB: publisher_reply({STREAM: 500, other: 500})}),
        poll_of(1, {PUB: publisher_reply({STREAM: 3, other: 600})}),
    ]

    assert not held(findings_of(polls), "server-restarted")


@pytest.mark.parametrize("idle", [0, 1])
def test_a_restart_with_an_idle_stream_whose_counter_did_not_move_is_found(idle: int) -> None:
    """The idle stream has pushed ``idle`` events before the restart and after it."""
    other = STREAM.replace("/x.", "/y.")
    polls = [
        poll_of(0, {PUB: publisher_reply({STREAM: 500, other: idle})}),
        poll_of(1, {PUB: publisher_reply({STREAM: 3, other: idle})}),
    ]

    assert held(findings_of(polls), "server-restarted") == [1]


def test_a_restart_from_a_counter_above_2_to_the_31_is_no_wrap() -> None:
    polls = [
        poll_of(0, {PUB: publisher_reply({STREAM: 3_000_000_000})}),
        poll_of(1, {PUB: publisher_reply({STREAM: 5})}),
    ]

    assert held(findings_of(polls), "server-restarted") == [1]


def test_a_silent_server_is_counted_poll_after_poll_and_clears_when_it_answers() -> None:
    polls = [
        pub_sub(0, 1, 1),
        poll_of(1, {PUB: "API_CorbaException: timeout\nmore", SUB: subscriber_reply({})}),
        poll_of(2, {PUB: "API_CorbaException: timeout", SUB: subscriber_reply({})}),
        pub_sub(3, 1, 1),
    ]

    run = findings_of(polls)

    assert [f.evidence["polls"] for f in only(run, "server-not-answering")] == [1, 2]
    assert run[3].cleared[0].finding.subject == Subject(PUB)
    assert run[3].cleared[0].polls == 2


@pytest.mark.parametrize("silent", [SUB, PUB])
def test_a_finding_stays_while_its_server_or_publisher_does_not_answer(silent: str) -> None:
    """Falling behind from poll 3; at poll 4 one end does not answer: nothing tells the
    finding cleared, and at poll 5 it still holds, since poll 3."""
    replies: dict[str, dict[str, Any] | str] = {
        PUB: publisher_reply({STREAM: 400}),
        SUB: subscriber_reply({TOPIC: subscription(40)}),
        silent: "API_CorbaException: timeout",
    }
    polls = [pub_sub(i, 100 * i, 10 * i) for i in range(4)]
    polls += [poll_of(4, replies), pub_sub(5, 500, 50), pub_sub(6, 600, 600)]

    run = findings_of(polls)

    assert held(run, "falling-behind") == [3, 4, 5]
    assert [c.finding.kind for findings in run[:6] for c in findings.cleared] == [
        "server-not-answering"
    ]
    (cleared,) = run[6].cleared
    assert (cleared.finding.kind, cleared.since, cleared.polls) == (
        "falling-behind",
        run[3].time,
        3,
    )


def test_a_finding_on_a_silent_publishers_stream_clears_once_the_subscriber_drops_it() -> None:
    """The publisher stops answering for good at poll 4, and its subscriber no longer
    has the subscription: the stream is gone, and so is its finding."""
    polls = [pub_sub(i, 100 * i, 10 * i) for i in range(4)]
    polls += [
        poll_of(i, {PUB: "API_CorbaException: timeout", SUB: subscriber_reply({})})
        for i in range(4, 7)
    ]

    run = findings_of(polls)

    assert held(run, "falling-behind") == [3]
    assert [c.finding.kind for c in run[4].cleared] == ["falling-behind"]


A_HOST, B_HOST = "tango://a:10000/", "tango://b:10000/"
SCALAR = "sys/tg_test/1/double_scalar"


def two_systems(seconds: int, a_received: int, b_received: int, *, b_missed: int = 0) -> Poll:
    """A subscriber of the stream of `SCALAR` in two control systems, pushed 100 events
    a second in each, which has received ``a_received`` and ``b_received`` of them."""
    publishers = {
        host + "dserver/TangoTest/1": publisher_reply({f"{host}{SCALAR}.change": 100 * seconds})
        for host in (A_HOST, B_HOST)
    }
    topics = {
        f"{A_HOST}{SCALAR}.idl5_change": subscription(
            a_received, channel=f"{A_HOST}dserver/tangotest/1"
        ),
        f"{B_HOST}{SCALAR}.idl5_change": subscription(
            b_received, channel=f"{B_HOST}dserver/tangotest/1", missed=b_missed
        ),
    }
    return poll_of(seconds, {**publishers, SUB: subscriber_reply(topics)})


def test_streams_of_one_name_in_two_control_systems_keep_apart() -> None:
    """The subscriber falls behind on the stream of control system A, keeps up with that
    of B, and misses events of B at the last poll."""
    polls = [two_systems(i, 10 * i, 100 * i) for i in range(6)]
    polls.append(two_systems(6, 60, 600, b_missed=2))

    run = findings_of(polls)

    assert held(run, "falling-behind") == [3, 4, 5, 6]
    assert {f.subject for f in only(run, "falling-behind")} == {
        Subject(SUB, f"{A_HOST}{SCALAR}.change")
    }
    (missed,) = only(run, "missed-events")
    assert missed.subject == Subject(SUB, f"{B_HOST}{SCALAR}.change")
    assert missed.evidence["cause"] == "unknown"  # B's stream was never behind


def test_the_history_of_streams_and_servers_gone_is_forgotten() -> None:
    """A subscriber that moves to another stream at every poll (all of them published),
    and servers that come and go: the engine keeps no more after 400 polls than after
    40."""
    history, diagnostician = PollHistory(), Diagnostician()

    def state_after(polls: range) -> int:
        for i in polls:
            stream = STREAM.replace("/x.", f"/x{i}.")
            replies = {
                PUB: publisher_reply({stream: 10}),
                SUB: subscriber_reply({stream.replace(".change", ".idl5_change"): subscription(9)}),
                f"dserver/Gone/{i}": subscriber_reply({}, waiting=WAITING),
            }
            diagnostician.add(history.add(poll_of(i, replies)))
        return len(pickle.dumps(diagnostician))

    after_40 = state_after(range(40))

    assert state_after(range(40, 400)) <= after_40 + 1000  # longer names


def waiting_poll(seconds: float, *entries: dict[str, str]) -> Poll:
    return poll_of(seconds, {SUB: subscriber_reply({}, waiting=entries)})


def test_a_waiting_subscription_is_timed_from_the_poll_that_first_showed_it() -> None:
    x, y = WAITING
    polls = [
        waiting_poll(0, x),
        waiting_poll(6, x, y),
        waiting_poll(11, x, y),  # x waited 11 s, y 5 s
        waiting_poll(12, y),
        waiting_poll(17, y, x),  # x is back: its wait starts again
    ]

    run = findings_of(polls)

    assert [[f.subject.stream for f in findings.active] for findings in run] == [
        [],
        [],
        ["a/b/e/x.change"],
        [],
        ["a/b/e/y.change"],
    ]
    assert only(run, "not-connected")[0].evidence["waited_seconds"] == 11


def sampled(seconds: float, pushed: int, samples: int, *, on: bool = True) -> Poll:
    perf = [server_sample(1000)] * samples if on else None
    return poll_of(seconds, {PUB: publisher_reply({STREAM: pushed}, perf)})


def test_samples_are_compared_with_events_only_once_sampling_was_on_before() -> None:
    polls = [
        sampled(0, 0, 0, on=False),
        sampled(1, 100, 2),  # sampling was just turned on: events before it are not sampled
        sampled(2, 200, 100),
        sampled(3, 300, 10),
        sampled(4, 400, 0, on=False),  # turned off: nothing to compare
    ]

    run = findings_of(polls)

    assert held(run, "samples-shared") == [3]
    (shared,) = only(run, "samples-shared")
    assert shared.evidence == {"side": "server", "samples": 10, "events": 100}


def test_client_samples_are_compared_with_the_events_received() -> None:
    samples = [client_sample("x", 1000, 10, 100)]
    polls = [
        poll_of(0, {SUB: subscriber_reply({TOPIC: subscription(0)}, [])}),
        poll_of(1, {SUB: subscriber_reply({TOPIC: subscription(50)}, samples * 5)}),
    ]

    (shared,) = only(findings_of(polls), "samples-shared")

    assert shared.evidence == {"side": "client", "samples": 5, "events": 50}


def latency_poll(
    seconds: float, lowest: int | None, *, process: int = 100_000, events: int = 10
) -> Poll:
    """A subscriber whose ``events`` sampled events of a second took ``process`` μs each to
    handle (by default the whole second) and reached their callback from ``lowest`` μs on,
    25 ms apart; sampling off for None."""
    perf = None
    if lowest is not None:
        perf = [
            client_sample("x", 1_000_000 // events, process, lowest + 25_000 * i)
            for i in range(events)
        ]
    received = subscription(10 * int(seconds))
    return poll_of(seconds, {SUB: subscriber_reply({TOPIC: received}, perf)})


def test_latency_growing_while_callbacks_keep_the_thread_busy_is_a_slow_callback() -> None:
    run = findings_of(
        [latency_poll(i, low) for i, low in enumerate([0, 0, 300_000, 600_000, 900_000])]
    )

    assert held(run, "slow-callback") == [4]
    (slow,) = only(run, "slow-callback")
    assert slow.subject == Subject(SUB, X)
    assert number(slow, "busy_share") == pytest.approx(1.0)


def test_the_latency_history_starts_again_after_sampling_was_off() -> None:
    lows = [0, 0, 300_000, None, 600_000, 900_000]

    run = findings_of([latency_poll(i, low) for i, low in enumerate(lows)])

    assert not held(run, "slow-callback")


def test_latency_compares_consecutive_polls_only() -> None:
    """At a short period, most polls see no event: the latencies of polls far apart
    tell nothing of a queue building up."""
    lows = [0, 0, 0, 300_000, 0, 600_000, 0, 900_000]
    sampled = [i < 2 or i % 2 for i in range(len(lows))]  # sampling on, no event at 2, 4, 6

    run = findings_of([latency_poll(i, low, events=10 * sampled[i]) for i, low in enumerate(lows)])

    assert not held(run, "slow-callback")


def test_latency_needs_enough_samples_at_each_poll() -> None:
    lows = [0, 0, 300_000, 600_000, 900_000]

    run = findings_of([latency_poll(i, low, events=9) for i, low in enumerate(lows)])

    assert not held(run, "slow-callback")


def test_the_busy_share_of_growing_latency_spans_every_poll_compared() -> None:
    """Events handled in 1 ms each, then at the last poll in 100 ms: that poll was busy,
    but not the four seconds over which the latency grew (26 %)."""
    polls = [latency_poll(i, low, process=1_000) for i, low in enumerate([0, 0, 300_000, 600_000])]
    polls.append(latency_poll(4, 900_000))

    assert not held(findings_of(polls), "slow-callback")


def test_a_start_up_that_only_adds_subscriptions_is_no_churn() -> None:
    topics = [TOPIC.replace("/x.", f"/{name}.") for name in "xyz"]
    polls = [
        poll_of(i, {SUB: subscriber_reply({t: subscription(0) for t in topics[:i]})})
        for i in range(4)
    ]

    assert not held(findings_of(polls), "subscription-churn")


def test_a_scan_that_subscribes_once_then_unsubscribes_is_no_churn() -> None:
    other = TOPIC.replace("/x.", "/y.")
    steady = {TOPIC: subscription(0)}
    polls = [
        poll_of(0, {SUB: subscriber_reply(steady)}),
        poll_of(1, {SUB: subscriber_reply({**steady, other: subscription(0)})}),
        poll_of(2, {SUB: subscriber_reply(steady)}),
        poll_of(3, {SUB: subscriber_reply(steady)}),
    ]

    assert not held(findings_of(polls), "subscription-churn")


def test_subscribing_and_unsubscribing_again_and_again_is_churn() -> None:
    other = TOPIC.replace("/x.", "/y.")
    steady = {TOPIC: subscription(0)}
    polls = [
        poll_of(i, {SUB: subscriber_reply({**steady, other: subscription(0)} if i % 2 else steady)})
        for i in range(6)
    ]

    assert held(findings_of(polls), "subscription-churn") == [4, 5]  # gone at polls 2 and 4


def test_findings_are_worst_first_then_by_subject_and_kind() -> None:
    polls = [
        pub_sub(0, 100, 100),
        poll_of(
            5,
            {
                PUB: publisher_reply({STREAM: 3}),
                SUB: subscriber_reply({TOPIC: subscription(3, missed=1)}, waiting=WAITING),
                "dserver/Gone/1": "API_DeviceNotExported: gone",
            },
        ),
    ]

    (_, findings) = findings_of(polls)

    assert [(f.severity, f.kind) for f in findings.active] == [
        (Severity.ERROR, "server-not-answering"),
        (Severity.ERROR, "missed-events"),
        (Severity.WARNING, "server-restarted"),
    ]
    assert findings.worst is Severity.ERROR


def test_subjects_with_and_without_a_stream_sort_together() -> None:
    subjects = [Subject("b"), Subject("a", "s2"), Subject("a"), Subject("a", "s1")]

    assert sorted(subjects) == [Subject("a"), Subject("a", "s1"), Subject("a", "s2"), Subject("b")]


def test_polls_read_back_with_their_findings_give_the_same_findings(tmp_path: Path) -> None:
    """A recording made by the monitor (findings on each line) replays the same."""
    polls = read_polls(DEMO / "plain.jsonl")
    run = findings_of(polls)
    path = tmp_path / "replay.jsonl"
    path.write_text(
        "".join(poll_record(poll, found) + "\n" for poll, found in zip(polls, run, strict=True))
    )

    assert findings_of(read_polls(path)) == run


# Properties.


@given(idle_systems())
def test_a_healthy_idle_system_has_no_finding(polls: list[Poll]) -> None:
    assert all(not findings.active for findings in findings_of(polls))


@given(turbulent_then_calm())
def test_every_finding_clears_once_its_cause_stops(
    turbulent_and_calm: tuple[list[Poll], list[Poll]],
) -> None:
    """Each rule looks at most one poll back once the system is calm: the first calm
    poll still compares with the turbulent one before it, the second no longer does."""
    turbulent, calm = turbulent_and_calm

    run = findings_of(turbulent + calm)

    assert all(not findings.active for findings in run[len(turbulent) + 1 :])
    _check_cleared(run)


def _check_cleared(run: list[Findings]) -> None:
    """Each finding that held at a poll and not at the next is cleared there, with the
    time and number of the polls it held at."""
    streaks: dict[tuple[str, Subject], tuple[datetime, int]] = {}
    before: dict[tuple[str, Subject], Finding] = {}
    for findings in run:
        now = {finding.key: finding for finding in findings.active}
        assert findings.cleared == tuple(
            Cleared(before[key], *streaks[key]) for key in sorted(before) if key not in now
        )
        streaks = {
            key: (streaks[key][0], streaks[key][1] + 1) if key in before else (findings.time, 1)
            for key in now
        }
        before = now


@pytest.mark.parametrize("start", [0, 1])
def test_one_diagnostician_per_history_gives_the_same_as_findings_of(start: int) -> None:
    polls = read_polls(DEMO / "plain.jsonl")[start:]
    history, diagnostician = PollHistory(), Diagnostician()

    assert [diagnostician.add(history.add(poll)) for poll in polls] == findings_of(polls)


# Reading recordings back.


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "line 2: it is not JSON"),
        ('{"time": "2026-03-17T12:00:00"}', "line 2: it has no 'replies' key"),
        ('{"time": "yesterday", "replies": {}}', "line 2: Invalid isoformat string"),
        ('{"time": "2026-03-17T12:00:00", "replies": {"a": {}}}', "line 2: the reply of a has"),
        ("[1, 2]", "line 2: the line is not a JSON object"),
    ],
)
def test_a_line_that_is_not_a_poll_is_named(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text('{"time": "2026-03-17T12:00:00", "replies": {}}\n' + line + "\n")

    with pytest.raises(PollRecordError, match=why) as raised:
        read_polls(path)

    assert str(path) in str(raised.value)
    assert "tango-event-monitor -o FILE" in str(raised.value)


def test_empty_lines_are_skipped_and_errors_kept(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text(
        '\n{"time": "2026-03-17T12:00:00", "replies": {"dserver/a/1": {"error": "gone"}}}\n\n'
    )

    (poll,) = read_polls(path)

    (reply,) = poll.replies
    assert (reply.server.admin, reply.error, reply.snapshot) == ("dserver/a/1", "gone", None)


def test_a_wall_clock_set_back_between_polls_is_no_churn() -> None:
    """The end of summer time, or NTP stepping the clock back an hour: the interval since
    the previous answer is not known, so no count of heartbeat wake-ups is made from it."""
    steady = {TOPIC: subscription(0)}
    samples = [client_sample("x", 100_000, 50, 300) for _ in range(100)]
    polls = [
        poll_of(seconds, {SUB: subscriber_reply(steady, perf=samples)})
        for seconds in (0, 10, 20 - 3600, 30 - 3600)
    ]

    assert not held(findings_of(polls), "subscription-churn")
