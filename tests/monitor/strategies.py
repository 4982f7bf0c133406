"""Hypothesis strategies for snapshots: a few names, so that two snapshots overlap."""

from __future__ import annotations

from hypothesis import strategies as st

from milonga.monitor import ClientSide, NotConnected, ServerSide, Snapshot, Subscription

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
