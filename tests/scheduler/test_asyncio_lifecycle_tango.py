"""AsyncCallbackScheduler's life cycle at its edges: cancellation as a stream connects,
closing from callbacks, Ctrl-C, and a loop closed at an unlucky moment.

Each test holds the loop's thread on purpose, only to make a window that real load opens
at random; it waits for a condition, never for a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import subprocess
import sys
from typing import Any

import pytest
import tango

from milonga import AsyncCallbackScheduler
from milonga.scheduler.subscriptions import SchedulerShutDownError
from milonga.testing import wait_until
from tests.scheduler.helpers import CHANGE, WAIT_SECONDS, Recorder


async def recorded(recorder: Recorder, condition: Any) -> None:
    await asyncio.to_thread(recorder.wait_for, condition)


def test_a_registration_cancelled_as_it_connects_calls_its_callback_no_more(
    counter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asyncio.wait_for(scheduler.register_event_callback(...), t)`` timing out just as the
    stream connects: the caller gets CancelledError/TimeoutError and no id, so the
    registration must be withdrawn.  Here the subscriber thread has resolved the
    registration, but the loop has not yet copied the result into the awaiting task when
    it is cancelled."""
    resolved: list[concurrent.futures.Future[Any]] = []
    wrap_future = asyncio.wrap_future

    def spy(future: Any, **kwargs: Any) -> Any:
        resolved.append(future)
        return wrap_future(future, **kwargs)

    monkeypatch.setattr(asyncio, "wrap_future", spy)
    cancelled_calls, witness = Recorder(), Recorder()

    async def main() -> None:
        async with AsyncCallbackScheduler(name="review-cancel") as scheduler:
            registering = asyncio.create_task(
                scheduler.register_event_callback(counter, "value", CHANGE, cancelled_calls)
            )
            while not resolved:  # let the task reach its await
                await asyncio.sleep(0)
            # Hold the loop until the subscriber thread has resolved the registration.
            concurrent.futures.wait(resolved, WAIT_SECONDS)
            assert resolved[0].done()
            registering.cancel()
            with pytest.raises(asyncio.CancelledError):
                await registering
            # A second callback on the same stream: once it has the current value, any
            # event queued for the cancelled one has been served too.
            await scheduler.register_event_callback(counter, "value", CHANGE, witness)
            await recorded(witness, lambda r: r.values == [5])
            assert cancelled_calls.values == [], (
                "a callback whose registration was cancelled is still called"
            )

    asyncio.run(main())


CLOSING_FROM_TWO_CALLBACKS = """
import asyncio, os, sys
import tango
from milonga import AsyncCallbackScheduler

CHANGE, ARCHIVE = tango.EventType.CHANGE_EVENT, tango.EventType.ARCHIVE_EVENT


async def main(trl: str, wait: float) -> None:
    scheduler = AsyncCallbackScheduler(task_count=2, name="review-close")
    entered, closed = [], []
    both_entered, go, all_closed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def close_on_event(event: tango.EventData) -> None:
        entered.append(event.event)
        if len(entered) == 2:
            both_entered.set()
        await go.wait()
        await scheduler.aclose()
        closed.append(event.event)
        if len(closed) == 2:
            all_closed.set()

    await scheduler.register_event_callback(trl, "value", CHANGE, close_on_event)
    await scheduler.register_event_callback(trl, "value", ARCHIVE, close_on_event)
    await asyncio.wait_for(both_entered.wait(), wait)  # one callback on each task
    go.set()
    try:
        await asyncio.wait_for(all_closed.wait(), wait)  # safety net: the fault is a hang
    except TimeoutError:
        # Ending the loop would recurse: each task gathers the other.
        print("aclose never returned", flush=True)
        os._exit(3)


asyncio.run(main(sys.argv[1], float(sys.argv[2])))
print("closed", flush=True)
"""


def test_two_callbacks_closing_the_scheduler_at_once_do_not_hang(counter: str) -> None:
    """``aclose`` is documented as callable from a callback.  With two tasks, two callbacks
    that both close the scheduler (say, each on a fatal reading) each wait in aclose for
    the other's task: neither aclose ever returns, and asyncio.run's final cancellation of
    the two tasks, which gather each other, recurses until RecursionError (which leaves
    the interpreter unusable, hence a process of its own)."""
    finished = subprocess.run(
        [sys.executable, "-c", CLOSING_FROM_TWO_CALLBACKS, counter, str(WAIT_SECONDS)],
        capture_output=True,
        text=True,
        timeout=3 * WAIT_SECONDS,  # safety net only
        check=False,
    )
    assert finished.stdout.strip() == "closed", finished.stdout + finished.stderr[-2000:]


def test_a_registration_pending_at_aclose_fails_with_a_shutdown_error_not_cancellation(
    counter: str,
) -> None:
    """A task awaiting ``register_event_callback`` for a device not defined yet (so still
    retrying) when another task closes the scheduler: asyncio takes the bare CancelledError
    it gets for the task being cancelled, so ``asyncio.run(main())`` ends with
    CancelledError and no word of the scheduler; a TaskGroup would take it the same way.
    It should fail with SchedulerShutDownError."""
    undefined = counter.rsplit("/", 1)[0] + "/404"

    async def main() -> None:
        scheduler = AsyncCallbackScheduler(name="review-pending")
        subfail = Recorder()
        registering = asyncio.create_task(
            scheduler.register_event_callback(undefined, "value", CHANGE, subfail)
        )
        await recorded(subfail, lambda r: len(r.events) >= 1)  # it is retrying
        await scheduler.aclose()
        assert not registering.cancelled(), "nobody cancelled the registering task"
        with pytest.raises(SchedulerShutDownError):
            await registering

    asyncio.run(main())


def test_ctrl_c_during_a_callback_stops_the_program(counter: str) -> None:
    """The loop usually runs on the main thread, where Python raises KeyboardInterrupt in
    whatever code runs when Ctrl-C arrives (always without asyncio.run's handler, as in a
    device server; the second Ctrl-C with it).  If that is a callback, the scheduler logs it
    as the callback's failure and carries on: Ctrl-C is lost.  asyncio itself lets
    KeyboardInterrupt and SystemExit out of the loop; so must the scheduler."""
    reported = asyncio.Event()

    class Reported(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "raised" in record.getMessage():
                loop.call_soon_threadsafe(reported.set)

    def interrupted(event: tango.EventData) -> None:
        raise KeyboardInterrupt  # as the default SIGINT handler does, wherever it lands

    async def main() -> None:
        async with AsyncCallbackScheduler(name="review-ctrl-c") as scheduler:
            await scheduler.register_event_callback(counter, "value", CHANGE, interrupted)
            await asyncio.wait_for(reported.wait(), WAIT_SECONDS)

    handler = Reported()
    logger = logging.getLogger("milonga")
    logger.addHandler(handler)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main())
    finally:
        logger.removeHandler(handler)
        # As asyncio.run does: cancel what is left, so that main's ``async with`` closes.
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_a_loop_closed_just_after_waking_its_task_is_still_noticed(
    counter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/asyncio.md: a loop closed without aclose is noticed at the next event, with a
    warning, and everything is unsubscribed.  But if an event arrived in the loop's last
    moments, its wake-up (or the task it woke) never ran: the task is no longer idle in the
    dispatcher, so no later event calls the waker, and the closed loop goes unnoticed:
    no warning, the subscription stays for the life of the process.  With a stream of a
    few events a second, that is the usual case, not a rare one."""
    calls = Recorder()
    made: list[AsyncCallbackScheduler] = []

    async def main() -> None:
        scheduler = AsyncCallbackScheduler(name="review-closed-loop")
        made.append(scheduler)
        await scheduler.register_event_callback(counter, "value", CHANGE, calls)
        await recorded(calls, lambda r: r.values == [5])
        while not scheduler._dispatcher._idle:  # the task has served it and waits
            await asyncio.sleep(0)
        tango.DeviceProxy(counter).Increment()  # on the loop's thread, as a last action
        # Tango's thread queues the event and wakes the task, which never runs again.
        wait_until(
            lambda: sum(q.depth for q in scheduler.stats().queues) == 1,
            "the event queued",
            WAIT_SECONDS,
        )

    def warned() -> bool:
        return any(
            "review-closed-loop" in r.getMessage() and "aclose()" in r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING
        )

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    try:
        tango.DeviceProxy(counter).Increment()  # the next event: the closed loop is noticed
        wait_until(warned, "the warning of the abandoned scheduler", WAIT_SECONDS)
    finally:
        for scheduler in made:  # unsubscribe, if the scheduler did not notice
            scheduler._subscriptions.close()
        gc.collect()
