"""The figures of streams and processes, over one poll and over a whole run, on polls
recorded from real servers (a demo run, and the findings scenarios) and built ones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from milonga.monitor import Poll, PollHistory, PollReport, Unsampled, rules
from milonga.monitor.figures import (
    attribute_of,
    poll_figures,
    run_figures,
    sample_attribute,
    server_identity,
    stream_of_topic,
)
from milonga.monitor.jsonl import read_polls
from milonga.monitor.stats import Metric, summarise
from tests.monitor.strategies import (
    HOST,
    PUB,
    SUB,
    client_sample,
    poll_of,
    publisher_reply,
    server_sample,
    subscriber_reply,
    subscription,
)

DEMO = Path(__file__).parent.parent / "demo" / "data"
FINDINGS = Path(__file__).parent / "data" / "findings"
TOP = "dserver/MyServer/top"
HW = "dserver/MyServer/hw"
POSITION = "foo/bar/hw/position.change"
STREAM = f"{HOST}a/b/c/x.change"
TOPIC = f"{HOST}a/b/c/x.idl5_change"


def reports(polls: list[Poll]) -> list[PollReport]:
    history = PollHistory()
    return [history.add(poll) for poll in polls]


@pytest.fixture(scope="module")
def plain() -> list[PollReport]:
    """The demo run without the scheduler: a 300 ms callback against 10 Hz pushes."""
    return reports(read_polls(DEMO / "plain.jsonl"))


def test_a_topic_is_named_as_its_publisher_names_the_stream() -> None:
    assert stream_of_topic(f"{HOST}foo/bar/hw/position.idl5_change") == POSITION
    assert stream_of_topic("foo/bar/hw/position.idl4_archive") == "foo/bar/hw/position.archive"
    assert attribute_of(POSITION) == "position"
    assert sample_attribute("a/b/c/" + "A" * 40 + ".change") == "a" * 31


def test_entries_carry_their_snapshot_and_the_sampling_state_before_it(
    plain: list[PollReport],
) -> None:
    first, second = plain[0].entries[0], plain[1].entries[0]

    assert first.snapshot is not None
    assert second.snapshot is not None
    assert (first.unsampled, second.unsampled) == (Unsampled(), Unsampled())
    assert (first.last_answer, second.last_answer) == (None, plain[0].time)
    assert plain[2].entries[0].unsampled == Unsampled(server=False, client=True)


def test_one_poll_of_the_demo_shows_the_slow_stream(plain: list[PollReport]) -> None:
    figures = poll_figures(plain[1])
    position = next(s for s in figures.streams if s.name == POSITION)

    assert (position.publisher, position.subscriber) == (HW, TOP)
    assert (position.pushed, position.received, position.lag) == (49, 17, 32)
    # 49 pushes in the 5 s between the two polls: one every 102 ms.
    assert position.push_gap == pytest.approx(5.000168e6 / 49)
    assert position.processing is not None
    assert position.processing.median == pytest.approx(300434.5)
    assert position.too_slow
    consumer = figures.consumer(TOP)
    assert consumer is not None
    assert consumer.latency is not None


def test_one_poll_reuses_the_tables_of_its_report(plain: list[PollReport]) -> None:
    figures = poll_figures(plain[1])
    (entry,) = [e for e in plain[1].entries if e.server.admin == TOP]

    consumer = figures.consumer(TOP)
    assert entry.report is not None
    assert entry.report.client_perf is not None
    assert consumer is not None
    assert consumer.gaps is entry.report.client_perf.get(Metric.EVENT_GAPS)


def test_a_whole_run_adds_up_its_polls(plain: list[PollReport]) -> None:
    figures = run_figures(plain)
    position = next(s for s in figures.streams if s.name == POSITION)

    assert figures.polls == len(plain)
    assert (position.pushed, position.received, position.missed, position.lag) == (130, 130, 0, 0)
    # Pushing went on over three 5 s intervals, for 130 events; it started in the first
    # and stopped in the third, so only the second, with 50 events, gives the gap itself.
    steady = (plain[2].time - plain[1].time).total_seconds()
    assert position.push_gap == pytest.approx(steady * 1e6 / 50)
    assert position.push_gap is not None
    assert position.processing is not None
    assert position.processing.count == 123
    assert position.processing.median > position.push_gap
    publisher = figures.publisher(HW)
    assert publisher is not None
    assert publisher.rate == pytest.approx(10, rel=0.01)  # pushes 10 times a second


def test_a_whole_run_leaves_out_each_first_gap_after_sampling_started() -> None:
    """That gap spans the time sampling was off; a later query's first one is real."""
    pushed = [[], [server_sample(9_000_000), server_sample(100_000)], [server_sample(200_000)]]
    polls = [poll_of(i, {PUB: publisher_reply({STREAM: i}, perf)}) for i, perf in enumerate(pushed)]

    publisher = run_figures(reports(polls)).publisher(PUB)

    assert publisher is not None
    assert publisher.gaps == summarise([100_000, 200_000])


def test_the_push_gap_comes_from_counters_so_it_needs_no_samples() -> None:
    """The falling-behind recording has sampling off in every server."""
    polls = reports(read_polls(FINDINGS / "falling-behind.jsonl"))

    figures = run_figures(polls)

    assert not figures.publishers
    assert not figures.consumers
    assert any(s.push_gap is not None and s.pushed > 0 for s in figures.streams)


def test_the_lag_is_taken_only_when_both_ends_answered() -> None:
    polls = [
        poll_of(
            0, {PUB: publisher_reply({STREAM: 10}), SUB: subscriber_reply({TOPIC: subscription(4)})}
        ),
        poll_of(1, {PUB: "no answer", SUB: subscriber_reply({TOPIC: subscription(9)})}),
    ]

    first, second = (poll_figures(report) for report in reports(polls))

    assert first.streams[0].counters == (10, 4)
    assert not second.streams  # its publisher is not known to have answered


def test_processing_times_are_matched_by_attribute_whatever_its_case() -> None:
    samples = [client_sample("X", 100, 5000, 200)]
    polls = [
        poll_of(
            0,
            {
                PUB: publisher_reply({STREAM: 1}),
                SUB: subscriber_reply({TOPIC: subscription(1)}, []),
            },
        ),
        poll_of(
            1,
            {
                PUB: publisher_reply({STREAM: 3}),
                SUB: subscriber_reply({TOPIC: subscription(3)}, samples),
            },
        ),
    ]

    (stream,) = poll_figures(reports(polls)[1]).streams

    assert stream.name == "a/b/c/x.change"
    assert stream.processing == summarise([5000])
    assert stream.latency == summarise([200])
    assert stream.push_gap == pytest.approx(0.5e6)


def test_a_single_push_gives_no_push_gap() -> None:
    """It shows only the poll interval it fell in, not how often the publisher pushes."""
    polls = [
        poll_of(
            2 * i,
            {
                PUB: publisher_reply({STREAM: counter}),
                SUB: subscriber_reply({TOPIC: subscription(counter)}),
            },
        )
        for i, counter in enumerate([0, 1, 3])
    ]

    one, two = (poll_figures(report).streams[0] for report in reports(polls)[1:])

    assert (one.pushed, one.push_gap) == (1, None)
    assert two.pushed == 2
    assert two.push_gap == pytest.approx(1e6)


def test_over_a_run_the_push_gap_comes_from_intervals_pushing_went_on_through() -> None:
    """Pushing started within the first interval and stopped within the last: counted
    whole, they would make the gap look longer than it is."""
    counters = [0, 3, 13, 23, 25, 25]
    polls = [
        poll_of(
            i,
            {
                PUB: publisher_reply({STREAM: counter}),
                SUB: subscriber_reply({TOPIC: subscription(counter)}),
            },
        )
        for i, counter in enumerate(counters)
    ]
    history = reports(polls)

    (stream,) = run_figures(history).streams
    (first_intervals,) = run_figures(history[:3]).streams

    assert stream.pushed == 25
    assert stream.push_gap == pytest.approx(2e6 / 20)  # the two 1 s intervals with 10 each
    # Without an interval between two others in which it moved, all of them count.
    assert first_intervals.push_gap == pytest.approx(2e6 / 13)


# Pairing a subscription with its publisher.

ELSEWHERE = "tango://other:10000/"


def pair(
    publisher: str,
    topic: str,
    channel: str,
    stream: str = STREAM,
    others: Mapping[str, str] | None = None,
) -> list[tuple[str, str, int]]:
    """The streams of two polls of ``publisher`` pushing ``stream``, of each of ``others``
    (admin device: stream) pushing its stream 3 times as fast, and `SUB` subscribed to
    ``topic`` through ``channel``: their names, publishers and pushed counts."""
    polls = [
        poll_of(
            i,
            {
                publisher: publisher_reply({stream: 10 * i}),
                **{
                    admin: publisher_reply({name: 30 * i}) for admin, name in (others or {}).items()
                },
                SUB: subscriber_reply({topic: subscription(5 * i, channel=channel)}),
            },
        )
        for i in range(2)
    ]
    return [(s.name, s.publisher, s.pushed) for s in run_figures(reports(polls)).streams]


def test_a_server_is_identified_by_its_control_system_and_name_in_any_case() -> None:
    assert server_identity("tango://H:10000/dserver/Pub/1#dbase=no") == "h:10000/dserver/pub/1"
    assert server_identity("dserver/Pub/1") == "dserver/pub/1"


def test_a_device_of_the_same_name_in_another_control_system_is_not_the_publisher() -> None:
    """Its channel names the other control system's server, not the monitored one: by
    a Tango host that another monitored publisher names its streams with, or by another
    port."""
    topic = f"{ELSEWHERE}a/b/c/x.idl5_change"
    other = {f"{ELSEWHERE}{PUB}": f"{ELSEWHERE}a/b/c/y.change"}  # monitored, not pushing x
    port = "tango://127.0.0.1:10001/"

    assert pair(PUB, topic, f"{ELSEWHERE}dserver/pub/1", others=other) == []
    assert pair(f"{HOST}{PUB}", topic, f"{ELSEWHERE}dserver/pub/1", others=other) == []
    assert pair(PUB, f"{port}a/b/c/x.idl5_change", f"{port}dserver/pub/1") == []


@pytest.mark.parametrize("publisher", [PUB, f"{HOST}{PUB}", f"{HOST.upper()}{PUB.upper()}"])
def test_the_publisher_is_the_server_the_channel_names_however_it_is_spelled(
    publisher: str,
) -> None:
    """The channel is in lower case; the admin may be given bare or as a TRL."""
    assert pair(publisher, TOPIC, f"{HOST}dserver/pub/1") == [("a/b/c/x.change", publisher, 10)]


@pytest.mark.parametrize(
    ("published_on", "subscribed_on"),
    [
        (HOST, "tango://localhost:10000/"),  # an address, and a name for it
        ("tango://db.site.org:10000/", "tango://db:10000/"),  # a full name, and a short one
        ("tango://db:10000/", "tango://DB.site.org:10000/"),
    ],
)
def test_a_channel_spelling_the_tango_host_otherwise_finds_the_one_publisher_of_its_name(
    published_on: str, subscribed_on: str
) -> None:
    """Nothing is looked up: the one monitored publisher of that admin device and port
    that pushes the stream is taken for it."""
    topic, channel = f"{subscribed_on}a/b/c/x.idl5_change", f"{subscribed_on}dserver/pub/1"

    for publisher in (PUB, f"{published_on}{PUB}"):
        streams = pair(publisher, topic, channel, stream=f"{published_on}a/b/c/x.change")
        assert streams == [("a/b/c/x.change", publisher, 10)]


def test_a_channel_spelling_the_tango_host_otherwise_finds_none_among_two_publishers() -> None:
    """Two monitored control systems with the same names: either could be the one."""
    topic, channel = (
        "tango://localhost:10000/a/b/c/x.idl5_change",
        "tango://localhost:10000/dserver/pub/1",
    )
    other = {f"{ELSEWHERE}{PUB}": f"{ELSEWHERE}a/b/c/x.change"}

    assert pair(f"{HOST}{PUB}", topic, channel, others=other) == []
    assert pair(f"{HOST}{PUB}", TOPIC, f"{HOST}dserver/pub/1", others=other) == [
        ("a/b/c/x.change", f"{HOST}{PUB}", 10)
    ]
    assert pair(
        f"{HOST}{PUB}", f"{ELSEWHERE}a/b/c/x.idl5_change", f"{ELSEWHERE}dserver/pub/1", others=other
    ) == [("a/b/c/x.change", f"{ELSEWHERE}{PUB}", 30)]


def test_the_same_stream_from_two_control_systems_is_paired_once() -> None:
    elsewhere = f"{ELSEWHERE}a/b/c/x.idl5_change"
    polls = [
        poll_of(
            i,
            {
                PUB: publisher_reply({STREAM: 10 * i}),
                SUB: subscriber_reply(
                    {
                        TOPIC: subscription(10 * i),
                        elsewhere: subscription(3 * i, channel=f"{ELSEWHERE}dserver/pub/1"),
                    }
                ),
            },
        )
        for i in range(2)
    ]

    (stream,) = run_figures(reports(polls)).streams

    assert (stream.received, stream.counters) == (10, (10, 10))
    assert stream.sharing == (f"{ELSEWHERE}a/b/c/x.change",)


# Attribute names that several streams share.


def test_streams_sharing_an_attribute_name_say_so_and_the_message_names_them_all() -> None:
    """Perf samples name only the attribute: the processing time is of both together."""
    other = f"{HOST}d/e/f/x.idl5_change"  # from a publisher not monitored
    samples = [client_sample("x", 100, 5000, 200)] * 3
    polls = [
        poll_of(
            i,
            {
                PUB: publisher_reply({STREAM: 10 * i}),
                SUB: subscriber_reply(
                    {
                        TOPIC: subscription(10 * i),
                        other: subscription(i, channel=f"{HOST}dserver/q/1"),
                    },
                    samples if i else [],
                ),
            },
        )
        for i in range(2)
    ]

    (stream,) = poll_figures(reports(polls)[1]).streams
    finding = rules.slow_callback(stream._replace(push_gap=1000.0))

    assert stream.sharing == ("d/e/f/x.change",)
    assert finding is not None
    assert "a/b/c/x.change or d/e/f/x.change (median of them together" in finding.message
    assert finding.evidence["sharing_attribute"] == "d/e/f/x.change"


def test_a_stream_alone_with_its_attribute_name_shares_nothing() -> None:
    polls = [
        poll_of(
            i, {PUB: publisher_reply({STREAM: i}), SUB: subscriber_reply({TOPIC: subscription(i)})}
        )
        for i in range(2)
    ]

    (stream,) = poll_figures(reports(polls)[1]).streams

    finding = rules.slow_callback(stream._replace(processing=summarise([5000]), push_gap=1e3))

    assert stream.sharing == ()
    assert finding is not None
    assert "together" not in finding.message
    assert finding.evidence["sharing_attribute"] is None


# Clock steps.


def test_an_interval_the_clock_shows_as_negative_gives_no_push_gap() -> None:
    """The wall clock was set back (NTP) between two polls: that interval is unknown,
    whatever was pushed in it."""
    times = [0.0, 1.0, 0.5, 1.5, 2.5]  # set back 1.5 s between the second and third
    polls = [
        poll_of(
            seconds,
            {
                PUB: publisher_reply({STREAM: 10 * i}),
                SUB: subscriber_reply({TOPIC: subscription(10 * i)}),
            },
        )
        for i, seconds in enumerate(times)
    ]
    history = reports(polls)

    (stepped,) = poll_figures(history[2]).streams
    (stream,) = run_figures(history).streams

    assert (stepped.pushed, stepped.push_gap) == (10, None)
    assert stream.push_gap == pytest.approx(1e6 / 10)  # from the two 1 s intervals
