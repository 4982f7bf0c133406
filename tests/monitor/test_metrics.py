"""The Prometheus metrics of the monitor's polls (`EventSystemMetrics`), read back through
the text format as a scrape would: recorded polls, and hand-made ones."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from milonga.monitor.diff import COUNTER_WRAP
from milonga.monitor.findings import Diagnostician, Finding, Findings, Severity, Subject
from milonga.monitor.jsonl import read_polls
from milonga.monitor.metrics import BUCKETS, EventSystemMetrics
from milonga.monitor.poll import Poll, PollHistory
from milonga.monitor.snapshot import short_name
from tests.monitor.strategies import (
    HOST,
    START,
    client_sample,
    poll_of,
    publisher_reply,
    server_sample,
    subscriber_reply,
    subscription,
)

RECORDED = Path(__file__).parent / "data" / "findings"
PUB = "dserver/Pub/1"
SUB = "dserver/Sub/1"
STREAM = f"{HOST}a/b/c/x.change"
OTHER_STREAM = f"{HOST}a/b/c/y.change"
TOPIC = f"{HOST}a/b/c/x.idl5_change"
OTHER_TOPIC = f"{HOST}a/b/c/y.idl5_change"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""A scrape's samples: value by name and labels."""


def scrape(metrics: EventSystemMetrics) -> Samples:
    """What a scrape shows, parsed back from the text format (so it must be valid); the
    families of `EventSystemMetrics.collect`, as `prometheus_client` writes them, show
    the same."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    _, text = metrics.text()
    shown = parse(text)
    assert shown == parse(generate_latest(registry))
    return shown


def parse(text: bytes) -> Samples:
    """The samples of a page of the text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with exactly ``labels``; None if there is none."""
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    """The label sets of every series of ``name``."""
    return {labels for (sample, labels) in samples if sample == name}


def scrapes(polls: Iterable[Poll]) -> Iterator[tuple[Poll, Samples]]:
    """Each of ``polls`` with the scrape after it, fed as the monitor's loop feeds them."""
    metrics = EventSystemMetrics()
    history, diagnostician = PollHistory(), Diagnostician()
    for poll in polls:
        report = history.add(poll)
        metrics.update(report, diagnostician.add(report))
        yield poll, scrape(metrics)


def increase(values: Sequence[float | None]) -> float:
    """How much a counter rose over the scraped ``values`` (None: no series), as
    Prometheus's ``increase()`` counts it without extrapolating: a value lower than the
    one before is a reset, after which the counter counted from 0 up to it."""
    shown = [seen for seen in values if seen is not None]
    return sum(now - before if now >= before else now for before, now in pairwise(shown))


@pytest.mark.parametrize("name", ["slow-callback", "falling-behind", "samples-shared"])
def test_counters_equal_the_replies(name: str) -> None:
    for poll, samples in scrapes(read_polls(RECORDED / f"{name}.jsonl")):
        for reply in poll.replies:
            admin, snapshot = reply.server.admin, reply.snapshot
            assert snapshot is not None
            assert value(samples, "tango_server_up", server=admin) == 1.0
            for stream, counter in (snapshot.server.publishers if snapshot.server else {}).items():
                labels = {"server": admin, "stream": short_name(stream)}
                assert value(samples, "tango_event_pushed_total", **labels) == counter
            for topic, sub in (snapshot.client.subscriptions if snapshot.client else {}).items():
                labels = {"server": admin, "stream": "test/findings/pusher/level.change"}
                assert topic.endswith("test/findings/pusher/level.idl5_change")
                assert value(samples, "tango_event_received_total", **labels) == sub.event_count
                assert value(samples, "tango_event_missed_total", **labels) == 0
                assert value(samples, "tango_event_discarded_total", **labels) == 2
                assert value(samples, "tango_event_callbacks", **labels) == sub.callback_count
                assert value(samples, "tango_event_not_connected", server=admin) == 0


def test_a_restart_drops_the_counter_and_increase_counts_every_event() -> None:
    # The recording's counters: 12, 24, restart, 6, 18, 30, silent twice, restart, 6, 18, 30.
    admin = "tango://127.0.0.1:40999/dserver/FindingsRestart/1"
    labels = {"server": admin, "stream": "test/findings/restarted/level.change"}

    seen = [
        (
            value(samples, "tango_event_pushed_total", **labels),
            value(samples, "tango_server_up", server=admin),
        )
        for _, samples in scrapes(read_polls(RECORDED / "server-restarted.jsonl"))
    ]

    assert seen == [
        (12, 1),
        (24, 1),
        (6, 1),
        (18, 1),
        (30, 1),
        (30, 0),
        (30, 0),
        (6, 1),
        (18, 1),
        (30, 1),
    ]
    # Pushed: 24 by the first process, 30 by each of the next two; 12 before the first poll.
    assert increase([pushed for pushed, _ in seen]) == 24 + 30 + 30 - 12


def test_a_subscription_gone_loses_its_series_and_counts_again_from_its_reply() -> None:
    # FindingsChurn's event counts: 12, 24, 36, gone, 12, gone, 0, 12, 36, 36.  Made
    # again, a subscription counts from 0: the drop is a reset to Prometheus.
    admin = "tango://127.0.0.1:52339/dserver/FindingsChurn/1"
    labels = {"server": admin, "stream": "test/findings/pusher/level.change"}

    received = [
        value(samples, "tango_event_received_total", **labels)
        for _, samples in scrapes(read_polls(RECORDED / "subscription-churn.jsonl"))
    ]

    assert received == [12, 24, 36, None, 12, None, 0, 12, 36, 36]
    assert increase(received) == (36 - 12) + 12 + 36


def test_an_exporter_started_later_shows_the_same_counters() -> None:
    polls = list(read_polls(RECORDED / "server-restarted.jsonl"))
    admin = "tango://127.0.0.1:40999/dserver/FindingsRestart/1"
    labels = {"server": admin, "stream": "test/findings/restarted/level.change"}

    first = [value(samples, "tango_event_pushed_total", **labels) for _, samples in scrapes(polls)]
    later = [
        value(samples, "tango_event_pushed_total", **labels) for _, samples in scrapes(polls[3:])
    ]

    assert later == first[3:]


def test_a_silent_server_keeps_its_series_with_up_0() -> None:
    polls = [
        poll_of(0, {PUB: publisher_reply({STREAM: 10}), SUB: subscriber_reply({})}),
        poll_of(1, {PUB: "API_DeviceNotExported: not running", SUB: subscriber_reply({})}),
    ]

    first, second = (samples for _, samples in scrapes(polls))

    assert value(second, "tango_server_up", server=PUB) == 0
    assert value(second, "tango_server_up", server=SUB) == 1
    pub_series = {key: v for key, v in first.items() if ("server", PUB) in key[1]}
    assert pub_series
    for (name, labels), before in pub_series.items():
        if name != "tango_server_up":
            assert second[name, labels] == before


def test_a_server_that_never_answered_has_only_its_up_series() -> None:
    polls = [poll_of(0, {PUB: "API_CantConnectToDevice: refused"})]

    ((_, samples),) = scrapes(polls)

    tango = [key for key in samples if key[0].startswith("tango_")]
    assert [key for key in tango if ("server", PUB) in key[1]] == [
        ("tango_server_up", frozenset({("server", PUB)}))
    ]
    assert value(samples, "tango_server_up", server=PUB) == 0


def test_a_stream_gone_and_a_server_no_longer_polled_lose_their_series() -> None:
    polls = [
        poll_of(
            0,
            {
                PUB: publisher_reply({STREAM: 1, OTHER_STREAM: 2}),
                SUB: subscriber_reply({TOPIC: subscription(1)}),
            },
        ),
        poll_of(1, {PUB: publisher_reply({STREAM: 3})}),
    ]

    _, (_, after) = scrapes(polls)

    assert series(after, "tango_event_pushed_total") == {
        frozenset({("server", PUB), ("stream", "a/b/c/x.change")})
    }
    assert not [key for key in after if ("server", SUB) in key[1]]


def test_histograms_count_each_sample_once_and_leave_out_the_first_gap() -> None:
    server_perf = [server_sample(900_000, push=40), server_sample(100, 50), server_sample(3_000, 2)]
    client_perf = [
        client_sample("x", 800_000, process=100, latency=50),
        client_sample("x", 100, process=2_500_000, latency=None),
        client_sample("y", 200, process=30, latency=1_000),
        client_sample("", 7, process=99_999_999, latency=99_999_999, discarded=True),
    ]
    reply = subscriber_reply({TOPIC: subscription(3)}, client_perf)
    reply["server"] = publisher_reply({STREAM: 3}, server_perf)["server"]
    polls = [poll_of(0, {SUB: reply}), poll_of(1, {SUB: reply})]

    first, second = (samples for _, samples in scrapes(polls))

    def histogram(samples: Samples, name: str, **labels: str) -> tuple[list[float], float]:
        buckets = [
            value(samples, f"{name}_bucket", le=le, server=SUB, **labels) or 0.0
            for le in [*(repr(bound) for bound in BUCKETS), "+Inf"]
        ]
        count = value(samples, f"{name}_count", server=SUB, **labels)
        assert count == buckets[-1]
        return buckets, value(samples, f"{name}_sum", server=SUB, **labels) or 0.0

    def at(*observations: float) -> list[float]:
        """The cumulative bucket counts of ``observations`` in seconds."""
        return [
            float(sum(1 for seen in observations if seen <= bound))
            for bound in [*BUCKETS, float("inf")]
        ]

    # 50 μs and 100 μs sit on bucket bounds, which are inclusive.
    gaps, total = histogram(first, "tango_event_gap_seconds", side="server")
    assert gaps == at(100e-6, 3_000e-6)
    assert total == pytest.approx(3_100e-6)
    gaps, total = histogram(second, "tango_event_gap_seconds", side="server")
    assert gaps == at(100e-6, 3_000e-6, 0.9, 100e-6, 3_000e-6)
    assert total == pytest.approx(0.9 + 2 * 3_100e-6)
    pushes, total = histogram(first, "tango_event_push_seconds")
    assert pushes == at(40e-6, 50e-6, 2e-6)
    assert total == pytest.approx(92e-6)
    gaps, _ = histogram(first, "tango_event_gap_seconds", side="client")
    assert gaps == at(100e-6, 200e-6)
    processing, total = histogram(first, "tango_event_processing_seconds", attribute="x")
    assert processing == at(100e-6, 2.5)
    assert total == pytest.approx(2.5001)
    latency, total = histogram(first, "tango_event_latency_seconds", attribute="x")
    assert latency == at(50e-6)
    assert total == pytest.approx(50e-6)
    latency, _ = histogram(second, "tango_event_latency_seconds", attribute="y")
    assert latency == at(1e-3, 1e-3)
    assert not [key for key in first if ("attribute", "") in key[1]]


def test_no_histogram_without_samples() -> None:
    ((_, samples),) = scrapes([poll_of(0, {PUB: publisher_reply({STREAM: 3})})])

    assert not [name for name, _ in samples if name.endswith(("_bucket", "_count", "_sum"))]


def test_a_finding_is_1_while_it_holds_and_gone_after() -> None:
    metrics = EventSystemMetrics()
    report = PollHistory().add(poll_of(0, {SUB: subscriber_reply({TOPIC: subscription(1)})}))
    finding = Finding("slow-callback", Severity.WARNING, Subject(SUB, "a/b/c/x.change"), "slow", {})
    whole = Finding("server-restarted", Severity.INFO, Subject(SUB), "restarted", {})

    metrics.update(report, Findings(report.time, (finding, whole)))
    holding = scrape(metrics)
    metrics.update(report, Findings(report.time))
    after = scrape(metrics)

    stream = {"server": SUB, "stream": "a/b/c/x.change"}
    assert value(holding, "milonga_finding", **stream, kind="slow-callback", severity="warning")
    whole_server = {"server": SUB, "stream": "", "kind": "server-restarted", "severity": "info"}
    assert value(holding, "milonga_finding", **whole_server) == 1
    assert series(after, "milonga_finding") == set()


def test_recorded_findings_become_series() -> None:
    for poll, samples in scrapes(read_polls(RECORDED / "server-not-answering.jsonl")):
        silent = [reply.server.admin for reply in poll.replies if reply.snapshot is None]
        kinds = {dict(labels)["kind"] for labels in series(samples, "milonga_finding")}
        assert ("server-not-answering" in kinds) == bool(silent)


def test_the_last_poll_time_and_the_generation() -> None:
    metrics = EventSystemMetrics()
    history = PollHistory()
    assert metrics.generation == 0
    assert value(scrape(metrics), "milonga_last_poll_timestamp_seconds") is None

    report = history.add(poll_of(2.5, {PUB: publisher_reply({STREAM: 1})}))
    metrics.update(report, Findings(report.time))

    assert metrics.generation == 1
    when = START.astimezone().timestamp() + 2.5
    assert value(scrape(metrics), "milonga_last_poll_timestamp_seconds") == when
    assert value(scrape(metrics), "milonga_polling_period_seconds") is None  # not told


def test_the_polling_period_is_exported_when_given() -> None:
    metrics = EventSystemMetrics(polling_period=300.0)

    assert value(scrape(metrics), "milonga_polling_period_seconds") == 300.0


def test_streams_of_one_name_in_two_control_systems_are_named_in_full() -> None:
    elsewhere = TOPIC.replace("10000", "20000")
    reply = subscriber_reply({TOPIC: subscription(1), elsewhere: subscription(2)})

    ((_, samples),) = scrapes([poll_of(0, {SUB: reply})])

    assert value(samples, "tango_event_received_total", server=SUB, stream=STREAM) == 1
    full = elsewhere.replace(".idl5_change", ".change")
    assert value(samples, "tango_event_received_total", server=SUB, stream=full) == 2


near_wrap = st.one_of(
    st.integers(0, 2**24),
    st.integers(COUNTER_WRAP - 2**24, COUNTER_WRAP - 1),
    st.integers(0, 2**32 - 1),
)
silent = "API_DeviceNotExported: stopped"


@given(
    st.lists(
        st.one_of(st.none(), st.tuples(near_wrap, near_wrap, near_wrap, near_wrap)),
        min_size=1,
        max_size=12,
    )
)
def test_each_exported_counter_equals_its_replys(
    counters: list[tuple[int, int, int, int] | None],
) -> None:
    polls = [
        poll_of(
            index,
            {
                PUB: silent if seen is None else publisher_reply({STREAM: seen[0]}),
                SUB: silent
                if seen is None
                else subscriber_reply(
                    {TOPIC: subscription(seen[1], missed=seen[2], discarded=seen[3])}
                ),
            },
        )
        for index, seen in enumerate(counters)
    ]
    last = None
    labels = {"stream": "a/b/c/x.change"}

    for (_, samples), seen in zip(scrapes(polls), counters, strict=True):
        last = seen or last  # a silent server keeps its last values
        shown = (
            value(samples, "tango_event_pushed_total", server=PUB, **labels),
            value(samples, "tango_event_received_total", server=SUB, **labels),
            value(samples, "tango_event_missed_total", server=SUB, **labels),
            value(samples, "tango_event_discarded_total", server=SUB, **labels),
        )
        assert shown == (last or (None, None, None, None))
        assert value(samples, "tango_server_up", server=PUB) == (seen is not None)


def topics_of(names: list[tuple[int, str, str]]) -> list[str]:
    """Topics or streams from (control system, attribute, kind) triples: a few of each,
    so that many short and full names are shared."""
    return [
        f"tango://host{system}:10000/a/b/c/{attribute}.{kind}" for system, attribute, kind in names
    ]


names = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["x", "X", "y"]),
        st.sampled_from(["change", "idl5_change", "idl4_change", "periodic", "idl5_periodic"]),
    ),
    unique=True,
    max_size=12,
)


@given(names)
def test_stream_labels_are_unique_per_server_and_family(
    triples: list[tuple[int, str, str]],
) -> None:
    topics = topics_of(triples)
    reply = subscriber_reply({topic: subscription(1) for topic in topics})
    reply["server"] = publisher_reply(dict.fromkeys(topics, 1))["server"]

    page = scrape_one(poll_of(0, {SUB: reply}))

    counts = Counter(
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(page.decode())
        for sample in family.samples
    )
    assert [key for key, count in counts.items() if count > 1] == []
    for name in ("tango_event_pushed_total", "tango_event_received_total"):
        assert len(series(parse(page), name)) == len(topics)


def scrape_one(poll: Poll) -> bytes:
    """The page of the text format a scrape after only ``poll`` reads."""
    metrics = EventSystemMetrics()
    report = PollHistory().add(poll)
    metrics.update(report, Diagnostician().add(report))
    return metrics.text()[1]


def test_streams_of_one_full_name_are_labelled_as_cppTango_writes_them() -> None:
    # What one process publishes for IDL5 clients and for older ones.
    streams = {f"{HOST}a/b/c/x.idl5_change": 10, STREAM: 3, OTHER_STREAM: 1}

    ((_, samples),) = scrapes([poll_of(0, {PUB: publisher_reply(streams)})])

    assert {
        dict(labels)["stream"]: samples["tango_event_pushed_total", labels]
        for labels in series(samples, "tango_event_pushed_total")
    } == {f"{HOST}a/b/c/x.idl5_change": 10, STREAM: 3, "a/b/c/y.change": 1}


def test_a_negative_latency_counts_as_0() -> None:
    perf = [client_sample("x", 1_000, 20, -2_000), client_sample("x", 1_000, 20, 30)]
    reply = subscriber_reply({TOPIC: subscription(2)}, perf)

    ((_, samples),) = scrapes([poll_of(0, {SUB: reply})])

    latency = {"server": SUB, "attribute": "x"}
    lowest = repr(BUCKETS[0])
    assert value(samples, "tango_event_latency_seconds_bucket", **latency, le=lowest) == 2
    assert value(samples, "tango_event_latency_seconds_sum", **latency) == pytest.approx(30e-6)


def test_label_values_are_escaped() -> None:
    odd = 'dserver/Odd"Name\\with\nall/1'

    ((_, samples),) = scrapes([poll_of(0, {odd: publisher_reply({STREAM: 4})})])

    assert value(samples, "tango_event_pushed_total", server=odd, stream="a/b/c/x.change") == 4


def test_promtool_finds_nothing_wrong_with_a_page() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: apt-get install prometheus")
    metrics = EventSystemMetrics()
    history, diagnostician = PollHistory(), Diagnostician()
    for poll in read_polls(RECORDED / "slow-callback.jsonl"):
        report = history.add(poll)
        metrics.update(report, diagnostician.add(report))

    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.text()[1],
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
