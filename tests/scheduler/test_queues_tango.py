"""Bounded queues, shared queues, fairness on one worker and stats(), against real servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tango

from milonga import CallbackScheduler
from milonga.scheduler import DEFAULT_QUEUE_SIZE
from milonga.testing import SandboxServers, wait_until

COUNTER = "tests.devices.counter"
CHANGE = tango.EventType.CHANGE_EVENT
WAIT_SECONDS = 15.0


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
    assert queue.streams == ("test/queues/1/value.change",)
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
    assert sorted(queue.streams) == ["test/queues/1/value.change", "test/queues/2/value.change"]
    assert queue.processed == 5


def test_one_worker_serves_a_quiet_stream_ahead_of_a_flooded_one(
    scheduler: CallbackScheduler, counters: list[str]
) -> None:
    flooded, quiet = counters
    calls: list[str] = []

    def slow(event: tango.EventData) -> None:
        calls.append("flooded")
        time.sleep(0.05)

    scheduler.register_event_callback(
        flooded,
        "value",
        CHANGE,
        slow,
        queue_factory=lambda: scheduler.allocate_queue(queue_size=64),
    ).result(WAIT_SECONDS)
    scheduler.register_event_callback(
        quiet, "value", CHANGE, lambda event: calls.append("quiet")
    ).result(WAIT_SECONDS)
    wait_until(lambda: calls.count("quiet") == 1, timeout=WAIT_SECONDS)
    flooded_proxy = tango.DeviceProxy(flooded)
    for _ in range(40):
        flooded_proxy.Increment()
    wait_until(lambda: scheduler.stats().depth >= 30, timeout=WAIT_SECONDS)

    started_before = len(calls)
    tango.DeviceProxy(quiet).Increment()
    wait_until(lambda: calls.count("quiet") == 2, timeout=WAIT_SECONDS)

    # The flooded callback running when the quiet event arrived, and at most one picked
    # while that event was still in flight; on Tango's own thread it would wait for all.
    ahead = calls[started_before:].index("quiet")
    assert ahead <= 2, calls
    assert scheduler.stats().depth >= 25


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
    assert queue.streams == ("test/queues/1/value.change",)
