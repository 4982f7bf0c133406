"""Hypothesis strategies for snapshots and polls: a few names, so that two snapshots
overlap; and builders of `QueryEventSystem` replies as JSON objects."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from milonga.monitor import (
    ClientSide,
    MonitoredServer,
    NotConnected,
    Poll,
    Reply,
    ServerSide,
    Snapshot,
    Subscription,
)

HOST = "tango://127.0.0.1:10000/"
STREAMS = [f"{HOST}a/b/{device}/{attr}.change" for device in "cd" for attr in ("x", "y")]
TOPICS = [stream.replace(".change", ".idl5_change") for stream in STREAMS]
counters = st.integers(min_value=0, max_value=10_000)


@st.composite
def subscriptions(draw: st.DrawFn, topic: str) -> Subscription:
    return Subscription(
        topic=topic,
        channel=f"{HOST}dserver/pub/1",
        callback_count=draw(st.integers(0, 3)),
        server_counter=draw(counters),
        event_count=draw(counters),
        missed_event_count=draw(st.integers(0, 5)),
        discarded_event_count=draw(st.integers(0, 5)),
        last_resubscribed=draw(
            st.sampled_from([None, "2026-03-17T12:00:00", "2026-03-17T12:00:10"])
        ),
    )


not_connected = st.builds(
    NotConnected,
    device=st.sampled_from(["a/b/c", "a/b/d"]),
    attribute=st.sampled_from(["x", "y"]),
    event_type=st.just("change"),
    last_heartbeat=st.sampled_from(["2026-03-17T12:00:00", "2026-03-17T12:00:10"]),
    tango_host=st.just(HOST),
)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    server = None
    if draw(st.booleans()):
        server = ServerSide(
            publishers=draw(st.dictionaries(st.sampled_from(STREAMS), counters)), perf=None
        )
    client = None
    if draw(st.booleans()):
        topics = draw(st.sets(st.sampled_from(TOPICS)))
        waiting = draw(st.lists(not_connected, max_size=3, unique_by=lambda entry: entry.key))
        client = ClientSide(
            subscriptions={topic: draw(subscriptions(topic)) for topic in sorted(topics)},
            not_connected=tuple(waiting),
            channels={},
            perf=None,
        )
    return Snapshot(server=server, client=client)


# Whole event systems, poll after poll, as `QueryEventSystem` JSON: a publisher ``PUB``
# pushing `STREAMS` and a subscriber ``SUB`` subscribed to `TOPICS`.

PUB = "dserver/Pub/1"
SUB = "dserver/Sub/1"
START = datetime(2026, 3, 17, 12, 0, 0)
WAITING = [
    {
        "device": f"{HOST}a/b/e",
        "attribute": attribute,
        "event_type": "change",
        "last_heartbeat": "2026-03-17T12:00:00",
        "tango_host": HOST,
    }
    for attribute in ("x", "y")
]


def server_sample(gap: int | None, push: int = 40) -> dict[str, Any]:
    """One server perf sample, as JSON."""
    return {"micros_since_last_event": gap, "push_event_micros": push}


def client_sample(  # noqa: PLR0917 - the fields of a sample
    attribute: str,
    gap: int | None,
    process: int,
    latency: int | None,
    wake: int = 1,
    discarded: bool = False,
) -> dict[str, Any]:
    """One client perf sample, as JSON."""
    return {
        "attr_name": attribute,
        "micros_since_last_event": gap,
        "sleep_micros": 10,
        "process_micros": process,
        "first_callback_latency_micros": latency,
        "callback_count": 1,
        "wake_count": wake,
        "discarded": discarded,
    }


def subscription(
    server_counter: int,
    *,
    events: int | None = None,
    missed: int = 0,
    discarded: int = 0,
    callbacks: int = 1,
    channel: str = f"{HOST}dserver/pub/1",
) -> dict[str, Any]:
    """One entry of ``client.event_callbacks``; ``events`` defaults to the counter."""
    return {
        "channel_name": channel,
        "callback_count": callbacks,
        "server_counter": server_counter,
        "event_count": server_counter if events is None else events,
        "missed_event_count": missed,
        "discarded_event_count": discarded,
        "last_resubscribed": None,
    }


def publisher_reply(pushed: Mapping[str, int], perf: list[Any] | None = None) -> dict[str, Any]:
    """The reply of a process publishing ``pushed`` (last pushed, by full stream name)."""
    return {
        "version": 1,
        "server": {
            "event_counters": {stream: counter + 1 for stream, counter in pushed.items()},
            "perf": perf,
        },
        "client": None,
    }


def subscriber_reply(
    subscriptions: Mapping[str, dict[str, Any]],
    perf: list[Any] | None = None,
    waiting: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The reply of a process subscribed to ``subscriptions`` (by full topic name)."""
    return {
        "version": 1,
        "server": {"event_counters": {}, "perf": None if perf is None else []},
        "client": {
            "event_callbacks": dict(subscriptions),
            "not_connected": list(waiting),
            "event_channels": {f"{HOST}dserver/pub/1": {"endpoint": "tcp://127.0.0.1:1"}},
            "perf": perf,
        },
    }


def poll_of(seconds: float, replies: Mapping[str, dict[str, Any] | str]) -> Poll:
    """The poll ``seconds`` after `START` of ``replies`` by admin device: each a
    `QueryEventSystem` object, or the error text of a server that did not answer."""
    return Poll(
        START + timedelta(seconds=seconds),
        tuple(
            Reply.failed(MonitoredServer(admin), reply)
            if isinstance(reply, str)
            else Reply.decoded(MonitoredServer(admin), reply)
            for admin, reply in replies.items()
        ),
    )


gaps = st.floats(min_value=0.1, max_value=30.0)
"""Seconds between two polls."""


@st.composite
def idle_systems(draw: st.DrawFn) -> list[Poll]:
    """Polls of a healthy idle system: counters that do not move, every event received,
    nothing waiting to connect, sampling on or off (and no samples), every server
    answering."""
    streams = draw(st.sets(st.sampled_from(STREAMS), min_size=1))
    pushed = {stream: draw(counters) for stream in streams}
    subscribed = draw(st.sets(st.sampled_from(sorted(streams))))
    sampling = draw(st.booleans())
    perf: list[Any] | None = [] if sampling else None
    publisher = publisher_reply(pushed, perf)
    subscriber = subscriber_reply(
        {_topic(stream): subscription(pushed[stream]) for stream in subscribed}, perf
    )
    times = itertools.accumulate(draw(st.lists(gaps, min_size=1, max_size=8)))
    return [poll_of(time, {PUB: publisher, SUB: subscriber}) for time in [0.0, *times]]


@st.composite
def turbulent_polls(draw: st.DrawFn) -> list[Poll]:
    """Polls of a system in any state: counters moving any way (mostly up, the lag often
    growing), events missed, subscriptions and callbacks coming and going, subscriptions
    waiting to connect, samples of any size and timing, servers not answering."""
    polls = []
    time = 0.0
    pushed = {stream: draw(counters) for stream in STREAMS}
    lags = dict.fromkeys(STREAMS, 0)
    for _ in range(draw(st.integers(1, 10))):
        time += draw(gaps)
        for stream in STREAMS:
            pushed[stream] = max(0, pushed[stream] + draw(st.integers(-100, 1000)))
            lags[stream] = max(0, lags[stream] + draw(st.integers(-20, 400)))
        replies: dict[str, dict[str, Any] | str] = {}
        published = draw(st.sets(st.sampled_from(STREAMS)))
        replies[PUB] = publisher_reply(
            {stream: pushed[stream] for stream in published}, draw(_server_samples())
        )
        subscriptions = {
            _topic(stream): subscription(
                max(0, pushed[stream] - lags[stream]),
                missed=draw(st.integers(0, 2000)),
                discarded=draw(st.integers(0, 3)),
                callbacks=draw(st.integers(0, 3)),
            )
            for stream in draw(st.sets(st.sampled_from(STREAMS)))
        }
        waiting = draw(st.lists(st.sampled_from(WAITING), max_size=2, unique_by=str))
        replies[SUB] = subscriber_reply(subscriptions, draw(_client_samples()), waiting)
        for admin in (PUB, SUB):
            if draw(st.integers(0, 5)) == 0:
                replies[admin] = "API_DeviceNotExported: the server is not running"
        polls.append(poll_of(time, replies))
    return polls


@st.composite
def turbulent_then_calm(draw: st.DrawFn) -> tuple[list[Poll], list[Poll]]:
    """`turbulent_polls`, then polls of the same system once the causes stopped: every
    server answers, counters stand still with every event received, no new missed
    event, the same subscriptions and callbacks, nothing waiting, no samples."""
    turbulent = draw(turbulent_polls())
    streams = draw(st.sets(st.sampled_from(STREAMS), min_size=1))
    pushed = {stream: draw(counters) for stream in streams}
    perf: list[Any] | None = draw(st.sampled_from([[], None]))
    publisher = publisher_reply(pushed, perf)
    subscriber = subscriber_reply(
        {
            _topic(stream): subscription(pushed[stream], missed=draw(st.integers(0, 2000)))
            for stream in streams
        },
        perf,
    )
    time = turbulent[-1].time - START
    calm = [
        poll_of(time.total_seconds() + seconds, {PUB: publisher, SUB: subscriber})
        for seconds in itertools.accumulate(draw(st.lists(gaps, min_size=2, max_size=5)))
    ]
    return turbulent, calm


def _server_samples() -> st.SearchStrategy[list[Any] | None]:
    sample = st.builds(server_sample, st.none() | st.integers(0, 10**7), st.integers(0, 10**4))
    return st.none() | st.lists(sample, max_size=30)


def _client_samples() -> st.SearchStrategy[list[Any] | None]:
    sample = st.builds(
        client_sample,
        st.sampled_from(["x", "y", ""]),
        st.none() | st.integers(0, 10**7),
        st.integers(0, 10**7),
        st.none() | st.integers(0, 10**8),
        st.integers(1, 4),
        st.booleans(),
    )
    return st.none() | st.lists(sample, max_size=30)


def _topic(stream: str) -> str:
    return stream.replace(".change", ".idl5_change")
