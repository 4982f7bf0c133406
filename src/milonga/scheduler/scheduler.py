"""CallbackScheduler: Tango event callbacks run by worker threads from fair, bounded queues.

An event travels one way: Tango's callback only puts it, with a snapshot of the stream's
callbacks, into the stream's queue; the dispatcher picks the queue that used the workers
least recently; a worker runs the callbacks.  No user code runs on Tango's event thread.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple, TypeVar

import tango

from milonga.scheduler.arguments import describe, positive_count, require_callable
from milonga.scheduler.dispatch import Dispatcher, Run
from milonga.scheduler.failures import CallbackFailureLog
from milonga.scheduler.internal_threads import current_holder
from milonga.scheduler.proxies import SharedProxies
from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue
from milonga.scheduler.stats import QueueStats, SchedulerStats
from milonga.scheduler.streams import (
    StreamKey,
    database_unreachable,
    stream_key,
    subscription_failed,
)
from milonga.scheduler.timers import DelayedActions
from milonga.tango_errors import root_cause

EventCallback = Callable[[tango.EventData], None]
QueueFactory = Callable[[], "EventQueue[QueuedEvent]"]

SUBSCRIBER_THREADS = 4
FIRST_RETRY_SECONDS = 0.05
RETRY_CAP_SECONDS = 5.0
UNUSED_STREAM_GRACE_SECONDS = 1.0
"""How long a stream left with no callback stays subscribed, in case one comes back.

A callback registered again within this time reuses the subscription.  A new subscription
costs round trips to the server, and events the server pushes in its first milliseconds
can be lost without an error event, before ZeroMQ has passed the subscription on.
"""
SHUTDOWN_SUBSCRIPTION_WAIT_SECONDS = 2.0
"""How long `CallbackScheduler.shutdown` waits, for all streams together, for cppTango to
finish making the subscriptions it must end.

cppTango makes an asynchronous subscription on a thread of its own and calls the stream's
callback when it is done, whether it worked or not: after a few round trips, or a Tango
timeout (3 s) or two if the server does not answer.  Unsubscribing before that call can
fail with API_EventNotFound and leave the subscription in cppTango, and dropping the proxy
then can crash the process; a subscription still unfinished at the deadline is ended at
that call, on a thread of its own.
"""
ASYNC_SUBSCRIPTION = hasattr(tango, "EventSubMode")


class SchedulerShutDownError(RuntimeError):
    """The scheduler was shut down; it accepts no more work."""


class UnknownStreamError(LookupError):
    """No stream with that device, attribute and event type is connected."""


@dataclass(frozen=True)
class CallbackID:
    """Identifies one registered callback; pass it to `CallbackScheduler.unregister_callback`."""

    stream: StreamKey
    serial: int


class QueuedEvent(NamedTuple):
    """An event waiting in a queue with the callbacks registered when it arrived."""

    event: tango.EventData
    stream: _Stream
    callbacks: tuple[tuple[CallbackID, EventCallback], ...]
    enqueued_at: float


@dataclass(eq=False)
class _Stream:
    key: StreamKey
    queue: EventQueue[QueuedEvent]
    callbacks: dict[CallbackID, EventCallback] = field(default_factory=dict)
    persistent: bool = False
    connected: bool = False
    closed: bool = False
    proxy: tango.DeviceProxy | None = None
    subscription: int | None = None
    last_event: tango.EventData | None = None
    connection: Future[None] = field(default_factory=Future)
    retry_delay: float = field(default_factory=lambda: FIRST_RETRY_SECONDS)
    unused_until: float = 0.0
    retrying: bool = False
    subscribing: threading.Lock = field(default_factory=threading.Lock)
    """Held while connecting or unsubscribing, so that the two never overlap."""
    delivering: threading.Lock = field(default_factory=threading.Lock)
    """Held while an event is recorded and queued, or a callback added: a callback added
    while an event arrives gets that event once, before the next."""
    called: threading.Event = field(default_factory=threading.Event)
    """Set when Tango first calls the stream's callback: cppTango has finished making the
    subscription, so unsubscribing it can no longer fail."""
    ending: threading.Lock = field(default_factory=threading.Lock)
    """Held while ``called`` is set or ``end_deferred`` read or changed."""
    end_deferred: bool = False
    """Whether the closed stream's unsubscription waits for Tango's first call."""
    orphaned: bool = False
    """Whether `CallbackScheduler.shutdown` gave up waiting for that call."""


class CallbackScheduler:
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
        self.name = name or f"CallbackScheduler-{next(_instances)}"
        self._logger = logger or logging.getLogger("milonga.scheduler")
        self._failures = CallbackFailureLog(self._logger)
        self._lock = threading.RLock()
        self._streams: dict[StreamKey, _Stream] = {}
        self._ending: set[_Stream] = set()  # closed, unsubscribing at Tango's first call
        self._proxies: SharedProxies[tango.DeviceProxy] = SharedProxies(
            tango.DeviceProxy, shared_failure=database_unreachable
        )
        self._later = DelayedActions(f"{self.name}-timer")
        self._closed = False
        self._dispatcher: Dispatcher[QueuedEvent] = Dispatcher()
        self._subscriber_threads = threading.local()  # .mine is True on this pool's threads
        self._subscriber = ThreadPoolExecutor(
            SUBSCRIBER_THREADS, f"{self.name}-subscribe", initializer=self._claim_subscriber_thread
        )
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

    # -- queues ---------------------------------------------------------------------------

    def allocate_queue(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> EventQueue[QueuedEvent]:
        """A new queue holding up to ``queue_size`` events, for a ``queue_factory``."""
        return EventQueue(size=queue_size)

    def get_queue(
        self, device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
    ) -> EventQueue[QueuedEvent]:
        """The queue of a connected stream, for a ``queue_factory`` that shares it."""
        key = stream_key(device, attr_name, event_type)
        with self._lock:
            stream = self._streams.get(key)
        if stream is None:
            raise UnknownStreamError(
                f"no stream {key} is connected to scheduler {self.name}; register a callback "
                "on it or connect_event_stream() it before sharing its queue"
            )
        return stream.queue

    # -- registration ---------------------------------------------------------------------

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
        ValueError at once.
        """
        key = stream_key(device, attr_name, event_type)
        require_callable("callback", callback, "a function taking one tango.EventData")
        registered: Future[CallbackID] = Future()
        with self._lock:
            stream, created = self._stream(key, queue_factory)
            callback_id = CallbackID(stream.key, next(_serials))
            with stream.delivering:
                stream.callbacks = {**stream.callbacks, callback_id: callback}
                self._catch_up(stream, callback_id, callback)
        if created and not ASYNC_SUBSCRIPTION:
            self._connect(stream)
        registered.add_done_callback(lambda future: self._withdraw(future, callback_id))
        _chain(stream.connection, registered, callback_id)
        return registered

    def unregister_callback(self, callback_id: CallbackID) -> None:
        """Stop calling the callback; it is not called again once this returns, except by a
        worker that had already started calling it.  The last callback of a stream not
        explicitly connected unsubscribes it.  Does nothing after `shutdown`, which
        unregistered everything."""
        with self._lock:
            if self._closed:
                return
            stream = self._streams.get(callback_id.stream)
            if stream is None or callback_id not in stream.callbacks:
                raise KeyError(
                    f"callback {callback_id} is not registered with scheduler {self.name}; "
                    "it was unregistered already or belongs to another scheduler"
                )
            stream.callbacks = {k: v for k, v in stream.callbacks.items() if k != callback_id}
            self._failures.forget(callback_id)
            self._disconnect_if_unused(stream)

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
        key = stream_key(device, attr_name, event_type)
        connected: Future[None] = Future()
        with self._lock:
            stream, created = self._stream(key, queue_factory)
            stream.persistent = True
        if created and not ASYNC_SUBSCRIPTION:
            self._connect(stream)
        _chain(stream.connection, connected, None)
        return connected

    def disconnect_event_stream(
        self, device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
    ) -> None:
        """Undo `connect_event_stream`: unsubscribe once the stream has no callbacks left.
        Does nothing after `shutdown`, which disconnected everything."""
        key = stream_key(device, attr_name, event_type)
        with self._lock:
            if self._closed:
                return
            stream = self._streams.get(key)
            if stream is None or not stream.persistent:
                raise UnknownStreamError(
                    f"stream {key} was not connected with connect_event_stream() on scheduler "
                    f"{self.name}; there is nothing to disconnect"
                )
            stream.persistent = False
            self._disconnect_if_unused(stream)

    # -- statistics and shutdown ------------------------------------------------------------

    def stats(self) -> SchedulerStats:
        """Depth, counts and timing percentiles of every queue; see `QueueStats`."""
        with self._lock:
            by_queue: dict[EventQueue[QueuedEvent], list[str]] = {}
            for stream in self._streams.values():
                by_queue.setdefault(stream.queue, []).append(str(stream.key))
            return SchedulerStats(
                tuple(
                    QueueStats.of(tuple(names), queue, self._dispatcher.timing(queue))
                    for queue, names in by_queue.items()
                )
            )

    @property
    def is_shut_down(self) -> bool:
        """Whether `shutdown` was called; a scheduler that is shut down accepts no work."""
        return self._closed

    def shutdown(self) -> None:
        """Start no more callbacks, unsubscribe every stream, release every proxy, and
        stop the workers once their callbacks running have finished.  Idempotent.

        In a device server's ``delete_device``, call it inside `allow_internal_threads` if a
        callback may push events on that device.
        """
        deadline = time.monotonic() + SHUTDOWN_SUBSCRIPTION_WAIT_SECONDS
        with self._lock:
            if self._closed:
                return
            self._dispatcher.close()  # no callback starts from now on
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
            for stream in streams:
                stream.closed = True
        self._later.close()
        # Pending connections of closed streams return at once; pending unsubscriptions of
        # streams already disconnected must still run, so nothing is cancelled.  Called
        # from a future's done-callback, which runs on a subscriber thread, it cannot wait
        # for that thread: the pool then finishes its last unsubscriptions on its own.
        self._subscriber.shutdown(wait=not getattr(self._subscriber_threads, "mine", False))
        for stream in streams:
            self._unsubscribe(stream)
            stream.connection.cancel()
        self._end_deferred_subscriptions(deadline)
        holder = current_holder()
        for worker in self._workers:
            if worker is threading.current_thread():
                continue
            if holder is None:
                worker.join()
            else:  # inside allow_internal_threads: run the pushes the workers hand over
                holder.serve_while(worker.is_alive)

    def _claim_subscriber_thread(self) -> None:
        self._subscriber_threads.mine = True

    # -- internals: streams -----------------------------------------------------------------

    def _stream(self, key: StreamKey, queue_factory: QueueFactory | None) -> tuple[_Stream, bool]:
        """The stream for ``key`` and whether it is new.  Holds the lock.

        A new stream starts connecting on the subscriber threads with asynchronous
        subscription; otherwise the caller connects it, outside the lock.  Raises
        TypeError, and creates nothing, if ``queue_factory`` or what it returns is wrong.
        """
        if self._closed:
            raise SchedulerShutDownError(
                f"scheduler {self.name} has been shut down; create a new CallbackScheduler"
            )
        if queue_factory is not None:
            require_callable("queue_factory", queue_factory, _QUEUE_FACTORY_EXPECTED)
        stream = self._streams.get(key)
        if stream is None:
            queue = queue_factory() if queue_factory is not None else self.allocate_queue()
            if not isinstance(queue, EventQueue):
                raise TypeError(
                    f"queue_factory returned {describe(queue)} for stream {key}; expected "
                    f"an EventQueue: {_QUEUE_FACTORY_EXPECTED}"
                )
            stream = _Stream(key, queue)
            self._streams[key] = stream
            if ASYNC_SUBSCRIPTION:
                self._subscriber.submit(self._connect, stream)
            return stream, True
        return stream, False

    def _connect(self, stream: _Stream, proxy_failure: BaseException | None = None) -> None:
        """Subscribe through the scheduler's proxy of the device; retry while it is unknown.

        With asynchronous subscription, a stream whose proxy waits for another build of
        its database does not hold a subscriber thread: `_proxy_built` connects it later,
        with ``proxy_failure`` if that build's failure holds for it too.  A failure that
        is not a `tango.DevFailed` fails the stream's registrations (`_give_up`).
        """
        try:
            with stream.subscribing:
                if stream.closed:
                    return
                try:
                    if proxy_failure is not None:
                        raise proxy_failure
                    proxy = self._acquire_proxy(stream)
                    if proxy is None:
                        return
                    if stream.retrying:
                        # A device defined only now may not run yet, and Tango would retry a
                        # failed subscription only every 10 s: wait for it, with our backoff.
                        proxy.ping()
                    self._subscribe(stream)
                except tango.DevFailed as failure:
                    self._logger.debug("cannot subscribe to %s yet: %s", stream.key, failure)
                    self._deliver(stream, subscription_failed(stream.key, failure))
                    self._retry_later(stream)
        except Exception as error:  # anything else: retrying would only fail again
            self._give_up(stream, error)
            return
        if stream.connected and not ASYNC_SUBSCRIPTION:
            # Outside the lock: the users' done-callbacks may do anything, shut down included.
            _resolve(stream.connection, None)

    def _acquire_proxy(self, stream: _Stream) -> tango.DeviceProxy | None:
        """``stream``'s proxy of its device, acquired now unless it has one; None while
        another build of the database runs.  Holds ``stream.subscribing``."""
        if stream.proxy is None:
            stream.proxy = self._proxies.acquire(
                stream.key.device_trl,
                functools.partial(self._proxy_built, stream) if ASYNC_SUBSCRIPTION else None,
            )
        return stream.proxy

    def _proxy_built(self, stream: _Stream, failure: BaseException | None) -> None:
        """The build that ``stream`` waited for has ended: connect it, with the build's
        failure if that holds for it too."""
        self._resubmit(stream, failure)

    def _give_up(self, stream: _Stream, error: Exception) -> None:
        """Fail the registrations of ``stream`` with ``error``, which no retry can mend (a
        bug, or PyTango refusing what it was given), log it, and forget the stream."""
        self._logger.error(
            "cannot subscribe to %s: %s; its registrations fail with this error",
            stream.key,
            describe(error),
            exc_info=error,
        )
        with self._lock:
            if self._streams.get(stream.key) is stream:
                self._disconnect(stream, error)

    def _subscribe(self, stream: _Stream) -> None:
        assert stream.proxy is not None
        key = stream.key

        def on_tango_event(event: tango.EventData) -> None:
            self._on_tango_event(stream, event)

        if ASYNC_SUBSCRIPTION:
            stream.subscription = stream.proxy.subscribe_event(
                key.attr_name, key.event_type, on_tango_event, sub_mode=tango.EventSubMode.AsyncRead
            )
        else:
            stream.subscription = stream.proxy.subscribe_event(
                key.attr_name, key.event_type, on_tango_event, stateless=True
            )
            stream.connected = True

    def _retry_later(self, stream: _Stream) -> None:
        """Connect ``stream`` again after its own backoff, or its database's if longer."""
        delay = stream.retry_delay
        stream.retry_delay = min(delay * 2, RETRY_CAP_SECONDS)
        stream.retrying = True
        delay = max(delay, self._proxies.backoff_left(stream.key.device_trl))
        with self._lock:
            if not self._closed and not stream.closed:
                self._later.call_later(delay, functools.partial(self._resubmit, stream))

    def _resubmit(self, stream: _Stream, proxy_failure: BaseException | None = None) -> None:
        """Connect ``stream`` again on a subscriber thread, unless it or we are closed."""
        with self._lock, contextlib.suppress(RuntimeError):  # the interpreter is exiting
            if not self._closed and not stream.closed:
                self._subscriber.submit(self._connect, stream, proxy_failure)

    def _mark_connected(self, stream: _Stream) -> None:
        """On Tango's thread, at the stream's first event: resolve its connection."""
        # No scheduler lock here: Tango's thread may hold cppTango's own locks, which a
        # thread holding ours may wait for (a DeviceProxy freed by garbage collection).
        if stream.connected or stream.closed or self._closed:
            return
        stream.connected = True
        # Resolving runs the users' done-callbacks: keep them off Tango's thread.
        with contextlib.suppress(RuntimeError):  # the pool was shut down meanwhile
            self._subscriber.submit(_resolve, stream.connection, None)

    def _disconnect_if_unused(self, stream: _Stream) -> None:
        """Unsubscribe ``stream`` if nothing keeps it: at once if it is not connected yet,
        else after the grace period.  Holds the lock."""
        if stream.callbacks or stream.persistent or self._closed:
            return
        if not stream.connected:
            self._disconnect(stream)
            return
        stream.unused_until = time.monotonic() + UNUSED_STREAM_GRACE_SECONDS
        self._later.call_later(
            UNUSED_STREAM_GRACE_SECONDS, functools.partial(self._disconnect_if_still_unused, stream)
        )

    def _disconnect_if_still_unused(self, stream: _Stream) -> None:
        with self._lock:
            unused = not (stream.callbacks or stream.persistent or stream.closed or self._closed)
            if unused and time.monotonic() >= stream.unused_until:
                self._disconnect(stream)

    def _disconnect(self, stream: _Stream, error: BaseException | None = None) -> None:
        """Forget ``stream`` and unsubscribe it on a subscriber thread; its pending
        registrations fail with ``error`` if given, else are cancelled.  Holds the lock."""
        del self._streams[stream.key]
        with stream.delivering:  # no event of it gets queued once its queue is discarded
            stream.closed = True
        if error is None:
            stream.connection.cancel()
        else:
            _resolve(stream.connection, None, error)
        if not any(other.queue is stream.queue for other in self._streams.values()):
            self._dispatcher.discard(stream.queue)
        self._subscriber.submit(self._unsubscribe, stream)

    def _unsubscribe(self, stream: _Stream) -> None:
        """Unsubscribe the closed ``stream`` and release its proxy, without waiting.

        cppTango makes an asynchronous subscription on a thread of its own; unsubscribing
        before it has called the callback for the first time can fail with
        API_EventNotFound and leave the subscription in cppTango, without its callback.
        Until that call, the unsubscription is deferred to it (`_first_call`), or to
        `shutdown`'s deadline.
        """
        with stream.subscribing:
            if stream.proxy is None:
                return
            if stream.subscription is not None and not self._called_or_deferred(stream):
                return
            self._end(stream, unsubscribe=True)

    def _called_or_deferred(self, stream: _Stream) -> bool:
        """Whether cppTango has called ``stream``'s callback; if not, defer its
        unsubscription to that call.  Holds ``stream.subscribing``."""
        if not ASYNC_SUBSCRIPTION:
            return True
        with stream.ending:
            if stream.called.is_set():
                return True
            stream.end_deferred = True
        with self._lock:
            self._ending.add(stream)
        return False

    def _end(self, stream: _Stream, *, unsubscribe: bool) -> None:
        """Unsubscribe ``stream`` if ``unsubscribe``, and release its proxy, which drops
        it if no other stream uses it.  Holds ``stream.subscribing``."""
        proxy, subscription = stream.proxy, stream.subscription
        stream.proxy = stream.subscription = None
        with self._lock:
            self._ending.discard(stream)
        if proxy is None:
            return
        if subscription is not None and unsubscribe:
            self._end_subscription(stream, proxy, subscription)
        self._proxies.release(stream.key.device_trl)

    def _first_call(self, stream: _Stream) -> None:
        """On Tango's thread, at its first call of ``stream``'s callback: hand a deferred
        unsubscription to the subscriber threads, or to a thread of its own once they are
        gone; while `shutdown` still waits for this call, it ends the subscription."""
        with stream.ending:
            stream.called.set()
            deferred = stream.end_deferred and (stream.orphaned or not self._closed)
            if deferred:
                stream.end_deferred = False
        if not deferred:
            return
        try:
            self._subscriber.submit(self._unsubscribe, stream)
        except RuntimeError:  # the pool is shut down
            with contextlib.suppress(RuntimeError):  # the interpreter is exiting
                threading.Thread(
                    target=self._unsubscribe,
                    args=(stream,),
                    name=f"{self.name}-unsubscribe",
                    daemon=True,
                ).start()

    def _end_deferred_subscriptions(self, deadline: float) -> None:
        """At shutdown: end every deferred unsubscription once cppTango has called its
        stream, waiting until ``deadline`` (`time.monotonic`) at most for all of them
        together; past that, leave each to `_first_call`."""
        with self._lock:
            ending = list(self._ending)
        for stream in ending:
            stream.called.wait(max(0.0, deadline - time.monotonic()))
            with stream.ending:
                mine = stream.called.is_set() and stream.end_deferred
                stream.end_deferred = stream.end_deferred and not mine
                stream.orphaned = not stream.called.is_set()
            if mine:
                with stream.subscribing:
                    self._end(stream, unsubscribe=True)
            elif stream.orphaned:
                self._logger.debug(
                    "cppTango has not finished subscribing to %s; it is ended when it has",
                    stream.key,
                )

    def _end_subscription(
        self, stream: _Stream, proxy: tango.DeviceProxy, subscription: int
    ) -> None:
        """Unsubscribe ``subscription`` of the closed ``stream`` from cppTango."""
        try:
            proxy.unsubscribe_event(subscription)
        except tango.DevFailed as failure:
            self._logger.warning(
                "could not unsubscribe from %s: %s", stream.key, root_cause(failure)
            )
        except Exception:  # PyTango's own bookkeeping; the proxy's release still follows
            self._logger.exception("could not unsubscribe from %s", stream.key)

    def _withdraw(self, registered: Future[CallbackID], callback_id: CallbackID) -> None:
        """Forget a registration whose future the user cancelled."""
        if not registered.cancelled():
            return
        with self._lock:
            stream = self._streams.get(callback_id.stream)
            if stream is None or callback_id not in stream.callbacks:
                return
            stream.callbacks = {k: v for k, v in stream.callbacks.items() if k != callback_id}
            self._disconnect_if_unused(stream)

    # -- internals: events ----------------------------------------------------------------

    def _on_tango_event(self, stream: _Stream, event: tango.EventData) -> None:
        """Tango's callback: record and queue the event, nothing else."""
        if not stream.called.is_set():
            self._first_call(stream)
        self._deliver(stream, event)
        if ASYNC_SUBSCRIPTION and not event.err and not stream.connected:
            self._mark_connected(stream)

    def _catch_up(self, stream: _Stream, callback_id: CallbackID, callback: EventCallback) -> None:
        """Queue the stream's latest event, if any, for a callback just added.  Holds the
        stream's delivering lock.

        While that event still waits at the back of the queue, the callback joins it
        there: a burst of registrations then adds no entries that could push the stream's
        real events out of its bounded queue.
        """
        latest = stream.last_event  # the stream's latest news, good or bad
        if latest is None:
            return

        def joined(queued: QueuedEvent) -> QueuedEvent | None:
            if queued.stream is not stream or queued.event is not latest:
                return None
            return queued._replace(callbacks=(*queued.callbacks, (callback_id, callback)))

        if not self._dispatcher.amend_newest(stream.queue, joined):
            self._enqueue(stream, latest, {callback_id: callback})

    def _deliver(self, stream: _Stream, event: tango.EventData) -> None:
        """Make ``event`` the stream's latest and queue it for its callbacks."""
        with stream.delivering:
            stream.last_event = event
            self._enqueue(stream, event, stream.callbacks)

    def _enqueue(
        self,
        stream: _Stream,
        event: tango.EventData,
        callbacks: dict[CallbackID, EventCallback],
    ) -> None:
        if not callbacks or stream.closed:
            return
        queued = QueuedEvent(event, stream, tuple(callbacks.items()), time.monotonic())
        self._dispatcher.put(stream.queue, queued)

    def _work(self) -> None:
        finished: Run[QueuedEvent] | None = None
        while (job := self._dispatcher.next(finished)) is not None:
            queue, queued = job
            started = time.monotonic()
            for callback_id, callback in queued.callbacks:
                if callback_id not in queued.stream.callbacks:
                    continue  # unregistered while the event waited
                try:
                    callback(queued.event)
                except BaseException:  # even SystemExit must not take a worker down
                    self._failures.report(callback_id, callback)
            finished = (queue, started - queued.enqueued_at, time.monotonic() - started)


T = TypeVar("T")


def _resolve(future: Future[T], value: T, error: BaseException | None = None) -> None:
    """Settle ``future`` with ``error`` if given, else with ``value``, unless it was
    cancelled or settled meanwhile."""
    with contextlib.suppress(RuntimeError, InvalidStateError):
        if not future.set_running_or_notify_cancel():
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _chain(connection: Future[None], dependent: Future[T], value: T) -> None:
    """Settle ``dependent`` as ``connection`` settles: with ``value`` when it resolves, with
    its error when it fails, cancelled when it is cancelled."""

    def follow(done: Future[None]) -> None:
        if done.cancelled():
            dependent.cancel()
        else:
            _resolve(dependent, value, done.exception())

    connection.add_done_callback(follow)


_QUEUE_FACTORY_EXPECTED = (
    "a function without arguments returning scheduler.allocate_queue(...) or "
    "scheduler.get_queue(...)"
)
_instances = itertools.count(1)
_serials = itertools.count(1)  # process-wide, so that no two schedulers give out equal ids
