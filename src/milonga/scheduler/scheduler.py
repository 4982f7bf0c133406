"""CallbackScheduler: Tango event callbacks run by worker threads from fair, bounded queues.

An event travels one way: Tango's callback only puts it, with a snapshot of the stream's
callbacks, into the stream's queue; the dispatcher picks the queue that used the workers
least recently; a worker runs the callbacks.  No user code runs on Tango's event thread.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from concurrent.futures import Future
from types import TracebackType

import tango

from milonga.scheduler.arguments import positive_count
from milonga.scheduler.base import SchedulerBase
from milonga.scheduler.dispatch import Run
from milonga.scheduler.internal_threads import current_holder
from milonga.scheduler.streams import CallbackID, EventCallback, QueuedEvent
from milonga.scheduler.subscriptions import QueueFactory


class CallbackScheduler(SchedulerBase):
    """Runs Tango event callbacks on ``thread_count`` workers, fairly, from bounded queues.

    Each event stream gets its own queue (`DEFAULT_QUEUE_SIZE` events, oldest dropped
    first) unless a ``queue_factory`` says otherwise.  Use it as a context manager or call
    `shutdown` when done.
    """

    def __init__(
        self,
        *,
        thread_count: int = 1,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        thread_count = positive_count(
            "thread_count",
            thread_count,
            "give one worker for each callback that may be slow at the same time, plus one",
        )
        super().__init__(name, logger)
        self._workers = [
            threading.Thread(target=self._work, name=f"{self.name}-worker-{index}", daemon=True)
            for index in range(thread_count)
        ]
        for worker in self._workers:
            worker.start()

    def __enter__(self) -> CallbackScheduler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def register_event_callback(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallback,
        *,
        queue_factory: QueueFactory | None = None,
    ) -> Future[CallbackID]:
        """Call ``callback`` with each event of the stream, starting with its current value.

        The future resolves to the callback's id once the stream is connected; cancel it
        to withdraw a registration still pending.  It fails with the error if subscribing
        fails in a way no retry can mend.  ``queue_factory`` applies only if this call
        connects the stream.  Arguments of the wrong type or form raise TypeError or
        ValueError at once, and so does a coroutine function, which needs
        `AsyncCallbackScheduler`.
        """
        if inspect.iscoroutinefunction(callback):
            raise TypeError(
                f"callback {callback!r} is a coroutine function, which worker threads cannot "
                "run; use milonga.AsyncCallbackScheduler in an event loop, or a plain function"
            )
        return self._subscriptions.register(
            device, attr_name, event_type, callback, queue_factory, blocking=True
        )

    def connect_event_stream(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        *,
        queue_factory: QueueFactory | None = None,
    ) -> Future[None]:
        """Keep the stream subscribed, even without callbacks, until `disconnect_event_stream`.

        Events arriving while it has no callbacks are discarded.  The future and the
        arguments behave as in `register_event_callback`.
        """
        return self._subscriptions.connect(
            device, attr_name, event_type, queue_factory, blocking=True
        )

    def shutdown(self) -> None:
        """Start no more callbacks, unsubscribe every stream, release every proxy, and
        stop the workers once their callbacks running have finished.  Idempotent.

        In a device server's ``delete_device``, call it inside `allow_internal_threads` if a
        callback may push events on that device.
        """
        self._dispatcher.close()  # no callback starts from now on
        if not self._subscriptions.close():
            return
        holder = current_holder()
        for worker in self._workers:
            if worker is threading.current_thread():
                continue
            if holder is None:
                worker.join()
            else:  # inside allow_internal_threads: run the pushes the workers hand over
                holder.serve_while(worker.is_alive)

    def _work(self) -> None:
        """A worker: run the callbacks of one queued event after another."""
        report = self._subscriptions.failures.report
        finished: Run[QueuedEvent] | None = None
        while (job := self._dispatcher.next(finished)) is not None:
            queue, queued = job
            started = time.monotonic()
            registered, callbacks = queued.stream.callbacks, queued.callbacks
            for callback_id, callback in callbacks.items():
                if callbacks is not registered and callback_id not in registered:
                    continue  # unregistered while the event waited
                try:
                    callback(queued.event)
                except BaseException:  # even SystemExit must not take a worker down
                    report(callback_id, callback)
            finished = (queue, started - queued.enqueued_at, time.monotonic() - started)
