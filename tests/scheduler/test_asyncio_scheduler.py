"""AsyncCallbackScheduler's parts that need no device server: its argument and loop checks,
its shutdown, and `_LoopWaker`, which batches wake-ups of the loop from other threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import tango

from milonga import AsyncCallbackScheduler, CallbackScheduler
from milonga.scheduler import SchedulerShutDownError
from milonga.scheduler.asyncio_scheduler import _LoopWaker
from tests.scheduler.helpers import CHANGE, WAIT_SECONDS, CallSpy

NOWHERE = "tango://127.0.0.1:10000/test/nowhere/1"
"""A device no test subscribes to: the calls below fail before any Tango I/O."""


async def ignore(event: tango.EventData) -> None:
    """A coroutine callback."""


def scheduler_threads(name: str) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(name)]


def test_created_outside_a_running_loop_it_names_the_threaded_scheduler() -> None:
    with pytest.raises(RuntimeError, match="running event loop") as raised:
        AsyncCallbackScheduler(name="test-no-loop")

    assert "use milonga.CallbackScheduler" in str(raised.value)
    assert scheduler_threads("test-no-loop") == []


@pytest.mark.parametrize(
    ("task_count", "error", "message"),
    [
        (0, ValueError, "task_count must be at least 1, got 0"),
        (-2, ValueError, "task_count must be at least 1, got -2"),
        (1.5, TypeError, r"task_count must be a whole number of at least 1, got 1\.5 \(float\)"),
        ("2", TypeError, r"got '2' \(str\)"),
        (True, TypeError, r"got True \(bool\)"),
    ],
)
def test_a_bad_task_count_says_what_to_give(
    task_count: Any, error: type[Exception], message: str
) -> None:
    async def create() -> None:
        AsyncCallbackScheduler(task_count=task_count, name="test-bad-count")

    with pytest.raises(error, match=message) as raised:
        asyncio.run(create())

    assert "one task for each callback that may await for long" in str(raised.value)
    assert scheduler_threads("test-bad-count") == []


def test_the_threaded_scheduler_refuses_a_coroutine_function(
    scheduler: CallbackScheduler,
) -> None:
    with pytest.raises(TypeError, match=r"use milonga\.AsyncCallbackScheduler"):
        scheduler.register_event_callback(NOWHERE, "value", CHANGE, ignore)

    assert scheduler.stats().queues == ()


def test_a_closed_scheduler_refuses_work_and_leaves_no_thread() -> None:
    async def main() -> None:
        scheduler = AsyncCallbackScheduler(name="test-closed")
        await scheduler.aclose()
        await scheduler.aclose()  # idempotent

        with pytest.raises(SchedulerShutDownError, match="create a new AsyncCallbackScheduler"):
            await scheduler.register_event_callback(NOWHERE, "value", CHANGE, ignore)
        with pytest.raises(SchedulerShutDownError, match="create a new AsyncCallbackScheduler"):
            async with scheduler.events(NOWHERE, "value", CHANGE):
                pass  # pragma: no cover - entering raises
        assert scheduler.is_shut_down

    asyncio.run(main())

    assert scheduler_threads("test-closed") == []


def test_a_callback_that_is_not_callable_is_refused_at_once() -> None:
    async def main() -> None:
        async with AsyncCallbackScheduler(name="test-not-callable") as scheduler:
            with pytest.raises(TypeError, match="callback must be callable"):
                await scheduler.register_event_callback(NOWHERE, "value", CHANGE, 42)  # type: ignore[arg-type]
            assert scheduler.stats().queues == ()

    asyncio.run(main())


def never_closed() -> None:
    raise AssertionError("the loop is not closed")


def test_wakes_from_another_thread_cost_one_loop_wake_up_until_it_runs() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waker = _LoopWaker(loop, never_closed)
        first = [loop.create_future() for _ in range(5)]
        with CallSpy(loop) as spy:
            # The loop's thread is held by join: no wake-up runs until the thread is done.
            def wake_all() -> None:
                for awake in first:
                    waker.wake(awake)

            waking = threading.Thread(target=wake_all)
            waking.start()
            waking.join()
            await asyncio.wait_for(asyncio.gather(*first), WAIT_SECONDS)
            assert len(spy.calls) == 1

            later = loop.create_future()
            waking = threading.Thread(target=waker.wake, args=(later,))
            waking.start()
            waking.join()
            await asyncio.wait_for(later, WAIT_SECONDS)
            assert len(spy.calls) == 2, "a wake after the loop ran needs a wake-up of its own"

    asyncio.run(main())


def test_a_wake_on_the_loops_thread_settles_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waker = _LoopWaker(loop, never_closed)
        awake, cancelled = loop.create_future(), loop.create_future()
        cancelled.cancel()
        with CallSpy(loop) as spy:
            waker.wake(awake)
            waker.wake(cancelled)  # settled already: left as it is
        assert awake.done()
        assert cancelled.cancelled()
        assert spy.calls == []

    asyncio.run(main())


def test_a_wake_after_the_loop_closed_calls_on_closed() -> None:
    loop = asyncio.new_event_loop()
    closed: list[str] = []
    waker = _LoopWaker(loop, lambda: closed.append(threading.current_thread().name))
    awake = loop.create_future()
    loop.close()

    waking = threading.Thread(target=waker.wake, args=(awake,), name="test-waking")
    waking.start()
    waking.join()

    assert closed == ["test-waking"]
    assert not awake.done()
