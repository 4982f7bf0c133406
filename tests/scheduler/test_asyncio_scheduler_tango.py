"""AsyncCallbackScheduler against real device servers in the sandbox.

Each test runs its coroutine with `asyncio.run`.  The loop does not block waiting for a
condition, unless a test holds it on purpose: `recorded` and `eventually` wait on a thread
of the default executor, and Tango calls that take a while run there too.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import tango

from milonga import AsyncCallbackScheduler
from milonga.scheduler import QueueStats
from milonga.testing import SandboxServers, wait_until
from tests.conftest import PYTANGO10
from tests.scheduler.helpers import (
    ARCHIVE,
    CHANGE,
    COUNTER,
    WAIT_SECONDS,
    CallSpy,
    Recorder,
    client_callbacks,
)

TOPIC = "test/sched/1/value.idl5_change"
"""cppTango's name of the ``counter`` fixture's change events."""

HAS_EVENT_REASON = hasattr(tango, "EventReason")  # PyTango 10.1 and later


async def recorded(recorder: Recorder, condition: Callable[[Recorder], bool]) -> None:
    """Return once ``condition(recorder)`` holds; fail after `WAIT_SECONDS`."""
    await asyncio.to_thread(recorder.wait_for, condition)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Return once ``condition()`` holds, which nothing announces; fail, naming ``what``,
    after `WAIT_SECONDS`."""
    await asyncio.to_thread(wait_until, condition, what, WAIT_SECONDS)


async def waited(awaitable: Any) -> Any:
    """``awaitable``'s result; fail if it takes more than `WAIT_SECONDS`."""
    return await asyncio.wait_for(awaitable, WAIT_SECONDS)


def value_of(event: tango.EventData) -> int:
    reading: Any = event.attr_value
    return int(reading.value)


def wait_unsubscribed(topic: str) -> None:
    """Return once this process has no subscription whose cppTango name starts with
    ``topic``; fail after `WAIT_SECONDS`.  Before PyTango 10.3, which cannot count them,
    return at once."""
    if PYTANGO10:
        wait_until(
            lambda: not [name for name in client_callbacks() if name.startswith(topic)],
            f"the unsubscription from {topic}",
            WAIT_SECONDS,
        )


def queue_of(scheduler: AsyncCallbackScheduler, device: str) -> QueueStats:
    """The statistics of the one queue serving streams of ``device`` (a name or TRL)."""
    [queue] = [q for q in scheduler.stats().queues if any(device in s for s in q.streams)]
    return queue


def threads_named(prefix: str) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefix)]


def increment(trl: str, times: int = 1) -> None:
    proxy = tango.DeviceProxy(trl)
    for _ in range(times):
        proxy.Increment()


# -- callbacks ------------------------------------------------------------------------------


def test_callbacks_get_the_current_value_then_events_on_the_loops_thread(counter: str) -> None:
    coroutine_calls, plain_calls = Recorder(), Recorder()

    async def record(event: tango.EventData) -> None:
        await asyncio.sleep(0)
        coroutine_calls(event)

    async def main() -> str:
        async with AsyncCallbackScheduler(name="test-async") as scheduler:
            await scheduler.register_event_callback(counter, "value", CHANGE, record)
            await scheduler.register_event_callback(counter, "value", CHANGE, plain_calls)
            await asyncio.to_thread(increment, counter, 2)
            await recorded(coroutine_calls, lambda r: r.values == [5, 6, 7])
            await recorded(plain_calls, lambda r: r.values == [5, 6, 7])
        return threading.current_thread().name

    loop_thread = asyncio.run(main())

    if HAS_EVENT_REASON:
        assert coroutine_calls.events[0].event_reason == tango.EventReason.SubSuccess
    assert coroutine_calls.threads == plain_calls.threads == {loop_thread}


def test_a_slow_coroutine_delays_no_other_stream(sandbox_servers: SandboxServers) -> None:
    """The tutorial's load: a callback awaiting a slow read while its stream keeps coming."""
    slow_trl = sandbox_servers.add_device("Sched/afair", "Counter", "test/afair/slow")
    fast_trl = sandbox_servers.add_device("Sched/afair", "Counter", "test/afair/fast")
    sandbox_servers.start("Sched/afair", COUNTER)
    slow_calls, fast_calls = Recorder(), Recorder()
    feeding = threading.Event()

    def feed_the_slow_stream() -> None:
        proxy = tango.DeviceProxy(slow_trl)
        while feeding.is_set():
            proxy.Increment()

    async def main() -> None:
        gate = asyncio.Event()  # stands for a device read that takes long

        async def slow(event: tango.EventData) -> None:
            slow_calls(event)
            await gate.wait()

        async with AsyncCallbackScheduler(task_count=2, name="test-afair") as scheduler:
            await scheduler.register_event_callback(
                slow_trl,
                "value",
                CHANGE,
                slow,
                queue_factory=lambda: scheduler.allocate_queue(queue_size=2),
            )
            await scheduler.register_event_callback(fast_trl, "value", CHANGE, fast_calls)
            await recorded(slow_calls, lambda r: r.values == [0])
            feeding.set()
            feeder = threading.Thread(target=feed_the_slow_stream, name="test-feeder")
            feeder.start()
            try:
                for value in range(1, 6):
                    await asyncio.to_thread(increment, fast_trl)
                    await asyncio.to_thread(fast_calls.wait_for_last, value)
                await eventually(
                    lambda: queue_of(scheduler, "test/afair/slow").dropped > 0,
                    "the slow stream's queue to drop events",
                )
                assert not gate.is_set(), "the slow callback was still awaiting"
                assert slow_calls.values == [0]
            finally:
                feeding.clear()
                await asyncio.to_thread(feeder.join)
            last = tango.DeviceProxy(slow_trl).value
            gate.set()
            await recorded(slow_calls, lambda r: r.values[-1:] == [last])
            slow_queue = queue_of(scheduler, "test/afair/slow")
            assert fast_calls.values == [0, 1, 2, 3, 4, 5]
            assert queue_of(scheduler, "test/afair/fast").dropped == 0
            assert slow_queue.depth == 0
            assert slow_queue.processed + slow_queue.dropped == last + 1
            assert slow_calls.values == sorted(set(slow_calls.values))

    asyncio.run(main())

    assert threads_named("test-afair") == []
    wait_unsubscribed("test/afair/")


def test_events_of_one_stream_run_one_at_a_time_in_order_with_three_tasks(counter: str) -> None:
    running = {CHANGE: 0, ARCHIVE: 0}
    most = {CHANGE: 0, ARCHIVE: 0}
    values: dict[tango.EventType, list[int]] = {CHANGE: [], ARCHIVE: []}
    pushes = 20

    async def main() -> None:
        together = asyncio.Event()  # set once callbacks of both streams ran at the same time
        done = asyncio.Event()

        def tracker(kind: tango.EventType) -> Callable[[tango.EventData], Awaitable[None]]:
            async def track(event: tango.EventData) -> None:
                running[kind] += 1
                most[kind] = max(most[kind], running[kind])
                if all(running.values()):
                    together.set()
                try:
                    await waited(together.wait())
                    for _ in range(3):
                        await asyncio.sleep(0)
                    values[kind].append(value_of(event))
                finally:
                    running[kind] -= 1
                if all(len(v) == pushes + 1 for v in values.values()):
                    done.set()

            return track

        async with AsyncCallbackScheduler(task_count=3, name="test-order") as scheduler:
            for kind in (CHANGE, ARCHIVE):
                await scheduler.register_event_callback(
                    counter,
                    "value",
                    kind,
                    tracker(kind),
                    queue_factory=lambda: scheduler.allocate_queue(queue_size=2 * pushes),
                )
            await asyncio.to_thread(increment, counter, pushes)
            await waited(done.wait())
            assert scheduler.stats().dropped == 0

    asyncio.run(main())

    assert most == {CHANGE: 1, ARCHIVE: 1}
    assert values[CHANGE] == values[ARCHIVE] == list(range(5, 6 + pushes))


# -- events() -------------------------------------------------------------------------------


def test_a_slow_consumer_of_events_gets_the_newest_in_order_and_the_drops_counted(
    counter: str,
) -> None:
    pushes = 10

    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-events") as scheduler:
            async with scheduler.events(counter, "value", CHANGE, queue_size=2) as events:
                await asyncio.to_thread(increment, counter, pushes)
                # The scheduler has handed every event to the stream: the consumer is behind.
                await eventually(
                    lambda: queue_of(scheduler, "test/sched/1").processed == pushes + 1,
                    "every event to reach the consumer's buffer",
                )
                consumed = []
                async for event in events:
                    consumed.append(value_of(event))
                    if consumed[-1] == 5 + pushes:
                        break
                assert consumed == sorted(set(consumed))
                assert events.dropped == pushes + 1 - len(consumed) > 0

            async with scheduler.events(counter, "value", CHANGE) as fresh:
                first = await waited(anext(fresh))
                assert value_of(first) == 5 + pushes, "the current value comes first"
                assert fresh.dropped == 0

    asyncio.run(main())


@pytest.mark.requires_pytango10("counts subscriptions with ApiUtil.query_event_system")
def test_an_events_iteration_cancelled_unsubscribes_quietly(
    counter: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-cancel") as scheduler:
            seen: list[int] = []
            iterating = asyncio.Event()

            async def consume() -> None:
                async with scheduler.events(counter, "value", CHANGE) as events:
                    async for event in events:
                        seen.append(value_of(event))
                        iterating.set()

            consumer = asyncio.create_task(consume())
            await waited(iterating.wait())
            assert client_callbacks().get(TOPIC) == 1

            consumer.cancel()

            with pytest.raises(asyncio.CancelledError):
                await consumer
            await asyncio.to_thread(wait_unsubscribed, TOPIC)
            assert seen == [5]
            assert scheduler.stats().queues == ()

    asyncio.run(main())

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_events_iteration_ends_when_the_scheduler_closes(counter: str) -> None:
    async def main() -> list[int]:
        scheduler = AsyncCallbackScheduler(name="test-end")
        iterating = asyncio.Event()

        async def consume() -> list[int]:
            seen = []
            async with scheduler.events(counter, "value", CHANGE) as events:
                async for event in events:
                    seen.append(value_of(event))
                    iterating.set()
            return seen

        consumer = asyncio.create_task(consume())
        await waited(iterating.wait())
        await scheduler.aclose()
        seen: list[int] = await waited(consumer)
        return seen

    assert asyncio.run(main()) == [5]
    wait_unsubscribed(TOPIC)
    assert threads_named("test-end") == []


# -- shutdown -------------------------------------------------------------------------------


def test_aclose_waits_for_the_coroutine_in_progress_without_cancelling_it(counter: str) -> None:
    said: list[str] = []

    async def main() -> None:
        started, gate = asyncio.Event(), asyncio.Event()

        async def slow(event: tango.EventData) -> None:
            started.set()
            try:
                await gate.wait()
            except asyncio.CancelledError:
                said.append("callback cancelled")
                raise
            said.append("callback finished")

        scheduler = AsyncCallbackScheduler(name="test-aclose")
        await scheduler.register_event_callback(counter, "value", CHANGE, slow)
        await waited(started.wait())

        async def close() -> None:
            await scheduler.aclose()
            said.append("aclose returned")

        closing = asyncio.create_task(close())
        await eventually(lambda: scheduler.is_shut_down, "aclose to begin")
        await asyncio.to_thread(wait_unsubscribed, TOPIC)
        assert not closing.done()

        gate.set()

        await waited(closing)

    asyncio.run(main())

    assert said == ["callback finished", "aclose returned"]
    assert threads_named("test-aclose") == []


def abandonment_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and name in r.getMessage() and "aclose()" in r.getMessage()
    ]


def test_a_loop_ending_without_aclose_warns_and_leaves_nothing(
    counter: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Recorder()

    async def main() -> None:
        scheduler = AsyncCallbackScheduler(name="test-abandoned")
        await scheduler.register_event_callback(counter, "value", CHANGE, calls)
        await recorded(calls, lambda r: r.values == [5])

    asyncio.run(main())

    [warning] = abandonment_warnings(caplog, "test-abandoned")
    assert "async with AsyncCallbackScheduler" in warning
    wait_unsubscribed(TOPIC)
    wait_until(lambda: not threads_named("test-abandoned"), "its threads to end", WAIT_SECONDS)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop the test runs and closes itself; closed at the end in any case."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.mark.parametrize("iterating", [False, True], ids=["callback", "events"])
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_loop_closed_with_its_tasks_pending_is_noticed_at_the_next_event(
    counter: str, caplog: pytest.LogCaptureFixture, loop: asyncio.AbstractEventLoop, iterating: bool
) -> None:
    calls = Recorder()

    async def main() -> None:
        scheduler = AsyncCallbackScheduler(name="test-closed-loop")
        await scheduler.register_event_callback(counter, "value", CHANGE, calls)
        await recorded(calls, lambda r: r.values == [5])
        if iterating:
            entered = asyncio.Event()

            async def consume() -> None:
                async with scheduler.events(counter, "value", CHANGE) as events:
                    entered.set()
                    async for _ in events:
                        pass

            consumer = asyncio.create_task(consume())
            await waited(entered.wait())
            assert not consumer.done()

    loop.run_until_complete(main())
    loop.close()  # the scheduler's tasks still wait for events
    assert abandonment_warnings(caplog, "test-closed-loop") == []

    increment(counter)

    wait_until(
        lambda: bool(abandonment_warnings(caplog, "test-closed-loop")), "the warning", WAIT_SECONDS
    )
    wait_unsubscribed(TOPIC)
    wait_until(lambda: not threads_named("test-closed-loop"), "its threads to end", WAIT_SECONDS)
    assert calls.values == [5]
    gc.collect()  # the tasks left on the loop end here, quietly, not in another test


# -- registrations --------------------------------------------------------------------------


def test_a_raising_coroutine_is_logged_and_the_next_events_still_arrive(
    counter: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Recorder()

    async def explode(event: tango.EventData) -> None:
        calls(event)
        await asyncio.sleep(0)
        raise RuntimeError("boom in a coroutine")

    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-raising") as scheduler:
            await scheduler.register_event_callback(counter, "value", CHANGE, explode)
            await asyncio.to_thread(increment, counter, 2)
            await recorded(calls, lambda r: r.values == [5, 6, 7])

    asyncio.run(main())

    failures = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "milonga.scheduler"
    ]
    assert failures, "the raising coroutine must be logged"
    assert "boom in a coroutine" in (failures[0].exc_text or "")


def test_a_device_defined_after_registering_gets_subfail_events_then_its_value(
    sandbox_servers: SandboxServers,
) -> None:
    calls = Recorder()

    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-later") as scheduler:
            trl = sandbox_servers.sandbox.trl("test/alater/1")
            registering = asyncio.ensure_future(
                scheduler.register_event_callback(trl, "value", CHANGE, calls)
            )
            await recorded(calls, lambda r: len(r.events) >= 2)
            assert not registering.done()
            failure = calls.events[0]
            assert failure.err
            if HAS_EVENT_REASON:
                assert failure.event_reason == tango.EventReason.SubFail
            assert failure.errors[0].reason == "DB_DeviceNotDefined"

            await asyncio.to_thread(
                sandbox_servers.add_device, "Sched/alater", "Counter", "test/alater/1", {"Start": 9}
            )
            await asyncio.to_thread(sandbox_servers.start, "Sched/alater", COUNTER)

            await waited(registering)
            await recorded(calls, lambda r: r.values == [9])

    asyncio.run(main())


@pytest.mark.requires_pytango10("counts subscriptions with ApiUtil.query_event_system")
def test_unregistering_stops_the_calls_and_the_last_one_unsubscribes(counter: str) -> None:
    first, second = Recorder(), Recorder()

    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-unregister") as scheduler:
            ids = [
                await scheduler.register_event_callback(counter, "value", CHANGE, callback)
                for callback in (first, second)
            ]
            await recorded(second, lambda r: r.values == [5])

            scheduler.unregister_callback(ids[0])
            await asyncio.to_thread(increment, counter)
            await recorded(second, lambda r: r.values == [5, 6])
            scheduler.unregister_callback(ids[1])

            await asyncio.to_thread(wait_unsubscribed, TOPIC)
            with pytest.raises(KeyError, match="not registered"):
                scheduler.unregister_callback(ids[1])

    asyncio.run(main())

    assert first.values == [5]


@pytest.mark.requires_pytango10("counts subscriptions with ApiUtil.query_event_system")
def test_a_connected_stream_serves_new_callbacks_without_resubscribing(counter: str) -> None:
    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-connect") as scheduler:
            await scheduler.connect_event_stream(counter, "value", CHANGE)
            for _ in range(3):
                calls = Recorder()
                callback_id = await scheduler.register_event_callback(
                    counter, "value", CHANGE, calls
                )
                await recorded(calls, lambda r: r.values == [5])
                scheduler.unregister_callback(callback_id)
            assert client_callbacks()[TOPIC] == 1

            scheduler.disconnect_event_stream(counter, "value", CHANGE)

            await asyncio.to_thread(wait_unsubscribed, TOPIC)

    asyncio.run(main())


# -- batching -------------------------------------------------------------------------------


def test_events_that_arrive_while_the_loop_is_busy_cost_one_wake_up(counter: str) -> None:
    pushes = 20
    values: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        all_in = asyncio.Event()

        def record(event: tango.EventData) -> None:
            values.append(value_of(event))
            if len(values) == pushes + 1:
                all_in.set()

        async with AsyncCallbackScheduler(task_count=2, name="test-batch") as scheduler:
            await scheduler.register_event_callback(
                counter,
                "value",
                CHANGE,
                record,
                queue_factory=lambda: scheduler.allocate_queue(queue_size=2 * pushes),
            )
            await eventually(lambda: values == [5], "the current value")
            queued = threading.Event()

            def push() -> None:
                increment(counter, pushes)
                wait_until(lambda: scheduler.stats().depth == pushes, "the events queued")
                queued.set()

            with CallSpy(loop) as spy:
                pusher = threading.Thread(target=push, name="test-pusher")
                pusher.start()
                assert queued.wait(WAIT_SECONDS)  # holds the loop's thread meanwhile
                await waited(all_in.wait())
            pusher.join()

            assert len(spy.calls) == 1
            assert values == list(range(5, 6 + pushes))

    asyncio.run(main())
