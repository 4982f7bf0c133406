"""AsyncCallbackScheduler: Tango event callbacks and event streams served on an event loop.

The stream side is the threaded scheduler's: the same subscriptions, retries, bounded
queues and dispatcher.  Only the runner differs: ``task_count`` tasks of the loop take the
events, fairly, and run their callbacks, awaiting coroutines.  No user code runs on
Tango's thread, so callbacks may push events or touch a device in an asyncio server.

Events cross from Tango's thread to the loop in batches.  Tango's thread puts each event
into its queue; only an event that finds a task idle wakes the loop, and every event that
arrives until the task runs is served by that one wake-up.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

import tango

from milonga.scheduler.arguments import positive_count
from milonga.scheduler.base import SchedulerBase
from milonga.scheduler.dispatch import Run
from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue
from milonga.scheduler.streams import CallbackID, EventCallback, QueuedEvent
from milonga.scheduler.subscriptions import QueueFactory, SchedulerShutDownError

T = TypeVar("T")

YIELD_SECONDS = 0.005
"""How long a task runs callbacks that never suspend (plain functions, coroutines that
return at once) before it lets the rest of the loop run."""


class AsyncCallbackScheduler(SchedulerBase):
    """Runs Tango event callbacks on ``task_count`` tasks of the running event loop, fairly,
    from bounded queues, one event of a stream at a time.

    Create it inside a coroutine; use ``async with`` or `aclose` when done.  A callback is
    a coroutine function or a plain function; both run on the loop, so a plain one must be
    quick, and a coroutine must await rather than block.  ``task_count`` is how many
    callbacks may be in progress at once: give one task for each coroutine that may await
    for long at the same time, plus one.
    """

    def __init__(
        self,
        *,
        task_count: int = 1,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        task_count = positive_count(
            "task_count",
            task_count,
            "give one task for each callback that may await for long at the same time, plus one",
        )
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "AsyncCallbackScheduler must be created inside a running event loop, in a "
                "coroutine (under asyncio.run, or in an asyncio device server's init_device); "
                "without an event loop use milonga.CallbackScheduler"
            ) from None
        super().__init__(name, logger)
        self._closing = False
        self._closed: asyncio.Task[None] | None = None  # the one close, once begun
        self._closers: set[asyncio.Task[Any]] = set()  # tasks of ours awaiting aclose
        self._closing_lock = threading.Lock()  # the loop's thread and Tango's both close
        self._event_streams: set[EventStream] = set()
        self._waker = _LoopWaker(self._loop, self._abandoned)
        self._dispatcher.on_unwoken_put = self._check_loop
        self._tasks = [
            self._loop.create_task(self._serve(), name=f"{self.name}-task-{index}")
            for index in range(task_count)
        ]

    async def __aenter__(self) -> AsyncCallbackScheduler:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def register_event_callback(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallback,
        *,
        queue_factory: QueueFactory | None = None,
    ) -> CallbackID:
        """Call ``callback`` on the loop with each event of the stream, starting with its
        current value, and return its id once the stream is connected.

        Cancelling the call withdraws the registration.  It raises the error if subscribing
        fails in a way no retry can mend.  ``queue_factory`` applies only if this call
        connects the stream.  Arguments of the wrong type or form raise TypeError or
        ValueError at once.
        """
        registered = self._subscriptions.register(
            device, attr_name, event_type, callback, queue_factory, blocking=False
        )
        return await self._settled(registered, self._subscriptions.unregister)

    async def connect_event_stream(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        *,
        queue_factory: QueueFactory | None = None,
    ) -> None:
        """Keep the stream subscribed, even without callbacks, until
        ``disconnect_event_stream``; return once it is connected.

        Events arriving while it has no callbacks are discarded.  Cancelling and the
        arguments behave as in `register_event_callback`.
        """
        connected = self._subscriptions.connect(
            device, attr_name, event_type, queue_factory, blocking=False
        )
        await self._settled(
            connected,
            lambda _: self._subscriptions.disconnect(device, attr_name, event_type),
        )

    async def _settled(self, pending: Future[T], undo: Callable[[T], None]) -> T:
        """``pending``'s result, once settled.  If the awaiting task is cancelled after it
        resolved, ``undo`` it, so that nothing is left registered; if the scheduler was
        shut down meanwhile, raise `SchedulerShutDownError` rather than a cancellation
        that nobody asked for."""
        try:
            return await asyncio.wrap_future(pending)
        except asyncio.CancelledError:
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                undo(pending.result())
            if pending.cancelled() and self.is_shut_down and not _being_cancelled():
                raise SchedulerShutDownError(
                    f"scheduler {self.name} was shut down before the stream was connected"
                ) from None
            raise

    def events(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> EventStream:
        """The stream's events as an async iterator, for ``async with ... as events:``
        then ``async for event in events:``.

        Entering returns once the stream is connected, and the first event is the
        attribute's current value, so nothing pushed after entering is missed.  Up to
        ``queue_size`` events wait for the consumer; beyond that the oldest is dropped and
        counted (`EventStream.dropped`).  Iteration ends when the scheduler is closed.
        """
        return EventStream(self, device, attr_name, event_type, EventQueue(size=queue_size))

    async def aclose(self) -> None:
        """Start no more callbacks, end every `events` iteration, unsubscribe every stream
        and release every proxy; return once the callbacks running have finished.
        Idempotent: every call returns once the first has finished.  Callable from
        callbacks, which then are not waited for."""
        current = asyncio.current_task()
        if current in self._tasks:
            self._closers.add(current)
        if self._closed is None:
            self._closed = self._loop.create_task(self._close(), name=f"{self.name}-close")
        await asyncio.shield(self._closed)

    async def _close(self) -> None:
        self._stop_serving()
        await asyncio.to_thread(self._subscriptions.close)
        running = [task for task in self._tasks if task not in self._closers]
        await asyncio.gather(*running, return_exceptions=True)

    async def _serve(self) -> None:
        """A task: run the callbacks of one queued event after another, until closed."""
        dispatcher = self._dispatcher
        report = self._subscriptions.failures.report
        finished: Run[QueuedEvent] | None = None
        yielded_at = time.monotonic()
        try:
            while True:
                job = dispatcher.take(finished)
                finished = None
                if job is None:
                    if dispatcher.closed:
                        return
                    await self._until_ready()
                    yielded_at = time.monotonic()
                    continue
                queue, queued = job
                started = time.monotonic()
                registered, callbacks = queued.stream.callbacks, queued.callbacks
                for callback_id, callback in callbacks.items():
                    if callbacks is not registered and callback_id not in registered:
                        continue  # unregistered while the event waited
                    try:
                        result = callback(queued.event)
                        if inspect.isawaitable(result):
                            await result
                    except asyncio.CancelledError:
                        if _being_cancelled():
                            raise
                        report(callback_id, callback)  # the callback's own cancelled await
                    except (KeyboardInterrupt, SystemExit):
                        raise  # Ctrl-C on the loop's thread stops the program, as asyncio does
                    except BaseException:
                        report(callback_id, callback)
                ended = time.monotonic()
                finished = (queue, started - queued.enqueued_at, ended - started)
                if ended - yielded_at >= YIELD_SECONDS:
                    await asyncio.sleep(0)
                    yielded_at = time.monotonic()
        except asyncio.CancelledError:
            self._abandoned()
            raise

    async def _until_ready(self) -> None:
        """Return once a queue may be ready: at once if one is, or the dispatcher closed."""
        awake: asyncio.Future[None] = self._loop.create_future()
        if self._dispatcher.wait_ready(functools.partial(self._waker.wake, awake)):
            await awake

    def _check_loop(self) -> None:
        """On the thread of an event that woke no task: a task woken before may never
        run again, if the loop was closed since."""
        if self._loop.is_closed():
            self._abandoned()

    def _abandoned(self) -> None:
        """The loop cancelled a task, or closed, before `aclose`: say so, and close the
        scheduler on a thread of its own, which never blocks the caller."""
        if not self._stop_serving():
            return
        self._logger.warning(
            "the event loop of scheduler %s stopped serving it before aclose(); its streams "
            "are unsubscribed now. Use 'async with AsyncCallbackScheduler(...)' or await "
            "scheduler.aclose() before the loop ends",
            self.name,
        )
        threading.Thread(target=self._subscriptions.close, name=f"{self.name}-close").start()

    def _stop_serving(self) -> bool:
        """Start no more callbacks and end every `events` iteration; return False, doing
        nothing, if closing had begun already."""
        with self._closing_lock:
            if self._closing:
                return False
            self._closing = True
        self._dispatcher.close()
        for events in list(self._event_streams):
            events.end()
        return True


class EventStream:
    """The events of one stream, for ``async for``; made by `AsyncCallbackScheduler.events`.

    Entering the ``async with`` subscribes; leaving it unsubscribes.
    """

    def __init__(
        self,
        scheduler: AsyncCallbackScheduler,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        buffer: EventQueue[tango.EventData],
    ) -> None:
        self._scheduler = scheduler
        self._stream = device, attr_name, event_type
        self._buffer = buffer
        self._callback_id: CallbackID | None = None
        self._arrived: asyncio.Future[None] | None = None
        self._ended = False
        self._entered = False

    @property
    def dropped(self) -> int:
        """How many events were dropped, oldest first, because the consumer fell behind."""
        return self._buffer.dropped

    async def __aenter__(self) -> EventStream:
        if self._entered:
            raise RuntimeError(
                "this events() stream was entered already; call scheduler.events(...) again "
                "for another iteration"
            )
        self._entered = True
        self._scheduler._event_streams.add(self)
        try:
            self._callback_id = await self._scheduler.register_event_callback(
                *self._stream, self._put
            )
        except BaseException:
            self._scheduler._event_streams.discard(self)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._scheduler._event_streams.discard(self)
        self.end()
        if self._callback_id is not None:
            self._scheduler.unregister_callback(self._callback_id)
            self._callback_id = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> tango.EventData:
        """The next event, waiting for it; StopAsyncIteration once ended and drained."""
        while not len(self._buffer):
            if self._ended:
                raise StopAsyncIteration
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        return self._buffer.take()

    def end(self) -> None:
        """End the iteration once the events waiting have been taken."""
        self._ended = True
        self._wake()

    def _put(self, event: tango.EventData) -> None:
        """The stream's callback, on the loop: keep ``event`` for the consumer."""
        self._buffer.put(event)
        self._wake()

    def _wake(self) -> None:
        """End the consumer's wait, if it waits."""
        if self._arrived is not None:
            _settle(self._arrived)


class _LoopWaker:
    """Wakes idle tasks of ``loop`` from any thread, with one loop wake-up for all the
    wakes asked for until the loop runs it.  Calls ``on_closed`` if the loop is closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_closed: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._on_closed = on_closed
        self._pending: list[asyncio.Future[None]] = []

    def wake(self, awake: asyncio.Future[None]) -> None:
        """Resolve ``awake`` on the loop: at once on the loop's thread, else batched."""
        if threading.get_ident() == self._loop_thread:
            _settle(awake)
            return
        with self._lock:
            first = not self._pending
            self._pending.append(awake)
        if not first:
            if self._loop.is_closed():  # the wake-up pending will never run
                self._on_closed()
            return
        try:
            self._loop.call_soon_threadsafe(self._wake_pending)
        except RuntimeError:  # the loop is closed
            self._on_closed()

    def _wake_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for awake in pending:
            _settle(awake)


def _settle(awake: asyncio.Future[None]) -> None:
    """Resolve ``awake`` unless it is done, or its loop closed: nothing waits there then."""
    if not awake.done() and not awake.get_loop().is_closed():
        awake.set_result(None)


def _being_cancelled() -> bool:
    """Whether the current task has been asked to stop (not merely one of its awaits)."""
    task = asyncio.current_task()
    return task is not None and (task.cancelling() if hasattr(task, "cancelling") else True)
