"""Bounded queues, shared queues, fairness on one worker and stats(), against real servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import tango

from milonga import CallbackScheduler
from milonga.sandbox import TangoSandbox
from milonga.scheduler import DEFAULT_QUEUE_SIZE
from milonga.testing import SandboxServers, wait_until
from tests.scheduler.helpers import CHANGE, COUNTER, WAIT_SECONDS


def _value(event: tango.EventData) -> int | None:
    reading: Any = event.attr_value
    return None if event.err or reading is None else int(reading.value)


@pytest.fixture
def counters(sandbox_servers: SandboxServers) -> list[str]:
    trls = [
        sandbox_servers.add_device("Sched/queues", "Counter", f"test/queues/{index}")
        for index in (1, 2)
    ]
    sandbox_servers.start("Sched/queues", COUNTER)
    return trls


@pytest.fixture
def scheduler() -> Iterator[CallbackScheduler]:
    with CallbackScheduler(name="queues-test") as sched:
        yield sched


def test_stuck_stream_keeps_the_newest_events_and_counts_the_rest(
    scheduler: CallbackScheduler, counters: list[str]
) -> None:
    release = threading.Event()
    values: list[int | None] = []

    def stuck(event: tango.EventData) -> None:
        release.wait(WAIT_SECONDS)
        values.append(_value(event))

    scheduler.register_event_callback(counters[0], "value", CHANGE, stuck).result(WAIT_SECONDS)
    proxy = tango.DeviceProxy(counters[0])
    for _ in range(50):
        proxy.Increment()

    overflow = 50 - DEFAULT_QUEUE_SIZE
    wait_until(lambda: scheduler.stats().dropped == overflow, timeout=WAIT_SECONDS)
    (queue,) = scheduler.stats().queues
    assert (queue.depth, queue.size) == (DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_SIZE)
    assert queue.streams == (f"{counters[0]}/value.change",)
    release.set()
    wait_until(lambda: values[-1:] == [50], timeout=WAIT_SECONDS)

    # The current value (0) was running; the oldest waiting events made way for newer ones.
    assert values == [0, *range(overflow + 1, 51)]
    stats = scheduler.stats()
    assert (stats.processed, stats.dropped, stats.depth) == (1 + DEFAULT_QUEUE_SIZE, overflow, 0)
    assert stats.busiest() == stats.queues[0]
    assert stats.queues[0].queueing_delay_p99 is not None


def test_streams_sharing_a_queue_are_served_from_it_in_arrival_order(
    scheduler: CallbackScheduler, counters: list[str]
) -> None:
    seen: list[tuple[str, int | None]] = []
    first, second = counters

    def record(event: tango.EventData) -> None:
        seen.append((event.device.dev_name(), _value(event)))

    scheduler.register_event_callback(first, "value", CHANGE, record).result(WAIT_SECONDS)
    scheduler.register_event_callback(
        second,
        "value",
        CHANGE,
        record,
        queue_factory=lambda: scheduler.get_queue(first, "value", CHANGE),
    ).result(WAIT_SECONDS)
    wait_until(lambda: len(seen) == 2, timeout=WAIT_SECONDS)
    for trl in (first, second, first):
        tango.DeviceProxy(trl).Increment()

    wait_until(lambda: len(seen) == 5, timeout=WAIT_SECONDS)
    assert seen[2:] == [("test/queues/1", 1), ("test/queues/2", 1), ("test/queues/1", 2)]
    (queue,) = scheduler.stats().queues
    assert sorted(queue.streams) == [f"{first}/value.change", f"{second}/value.change"]
    assert queue.processed == 5


def test_one_worker_serves_a_quiet_stream_ahead_of_a_flooded_one(
    scheduler: CallbackScheduler, counters: list[str]
) -> None:
    flooded, quiet = counters
    calls: list[str] = []
    gate = threading.Event()
    gate.set()

    def held(event: tango.EventData) -> None:
        calls.append("flooded")
        assert gate.wait(WAIT_SECONDS)

    scheduler.register_event_callback(
        flooded,
        "value",
        CHANGE,
        held,
        queue_factory=lambda: scheduler.allocate_queue(queue_size=64),
    ).result(WAIT_SECONDS)
    scheduler.register_event_callback(
        quiet, "value", CHANGE, lambda event: calls.append("quiet")
    ).result(WAIT_SECONDS)
    wait_until(
        lambda: calls == ["flooded", "quiet"],
        "each stream's first callback, in registration order",
        WAIT_SECONDS,
    )
    gate.clear()  # the next flooded callback holds the only worker
    flooded_proxy = tango.DeviceProxy(flooded)
    for _ in range(40):
        flooded_proxy.Increment()
    wait_until(
        lambda: _depth(scheduler, flooded) == 39,
        "39 flooded events waiting",
        WAIT_SECONDS,
    )
    tango.DeviceProxy(quiet).Increment()
    wait_until(lambda: _depth(scheduler, quiet) == 1, "the quiet event waiting", WAIT_SECONDS)

    gate.set()  # the worker picks again, with 39 flooded events and 1 quiet one waiting

    wait_until(lambda: len(calls) >= 5, "5 callbacks", WAIT_SECONDS)
    assert calls[3:5] == ["quiet", "flooded"], "on Tango's own thread, 39 would run first"


def _depth(scheduler: CallbackScheduler, device_trl: str) -> int:
    """How many events of ``device_trl``'s value.change stream wait in its queue."""
    stream = f"{device_trl}/value.change"
    return next(queue.depth for queue in scheduler.stats().queues if stream in queue.streams)


def test_a_proxy_and_a_name_of_one_device_share_one_stream(
    scheduler: CallbackScheduler, counters: list[str]
) -> None:
    by_proxy: list[tango.EventData] = []
    by_name: list[tango.EventData] = []
    spelled_differently = counters[0].replace("127.0.0.1", "localhost")

    scheduler.register_event_callback(
        tango.DeviceProxy(counters[0]), "value", CHANGE, by_proxy.append
    ).result(WAIT_SECONDS)
    scheduler.register_event_callback(spelled_differently, "VALUE", CHANGE, by_name.append).result(
        WAIT_SECONDS
    )

    wait_until(lambda: len(by_name) == 1, timeout=WAIT_SECONDS)
    (queue,) = scheduler.stats().queues
    assert queue.streams == (f"{counters[0]}/value.change",)


def test_one_device_name_in_two_databases_is_two_streams(
    sandbox_servers: SandboxServers, scheduler: CallbackScheduler
) -> None:
    here = sandbox_servers.add_device("Sched/twin", "Counter", "test/twin/1", {"Start": 1})
    sandbox_servers.start("Sched/twin", COUNTER)
    with TangoSandbox() as elsewhere:
        elsewhere.add_device("Sched/twin", "Counter", "test/twin/1", {"Start": 2})
        elsewhere.start_server("Sched/twin", COUNTER)
        there = elsewhere.trl("test/twin/1")
        values: list[int | None] = []
        ids = [
            scheduler.register_event_callback(
                trl, "value", CHANGE, lambda e: values.append(_value(e))
            )
            for trl in (here, there)
        ]
        wait_until(lambda: sorted(values, key=str) == [1, 2], timeout=WAIT_SECONDS)

        labels = sorted(stream for queue in scheduler.stats().queues for stream in queue.streams)

        assert labels == sorted(
            f"tango://{sandbox.tango_host}/test/twin/1/value.change"
            for sandbox in (sandbox_servers.sandbox, elsewhere)
        )
        for callback_id in ids:
            scheduler.unregister_callback(callback_id.result(WAIT_SECONDS))
        scheduler.shutdown()  # before the second database and its server stop
