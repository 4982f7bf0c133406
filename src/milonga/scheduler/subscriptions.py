"""The stream side of a scheduler: subscriptions, shared proxies, retries and endings.

`Subscriptions` keeps one `Stream` per device, attribute and event type.  It subscribes
through a shared proxy on threads of its own, retries while the device is not defined or
not running (telling the callbacks with SubFail events), unsubscribes a stream a grace
period after its last callback went, and ends everything at `Subscriptions.close`.

Tango's callback only records each event and puts it, with a snapshot of the stream's
callbacks, into the stream's queue in the shared `Dispatcher`.  Who takes it from there
(worker threads, or tasks of an event loop) is the runner side's business.
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
from typing import TypeVar

import tango

from milonga.scheduler.arguments import describe, require_callable
from milonga.scheduler.dispatch import Dispatcher
from milonga.scheduler.failures import CallbackFailureLog
from milonga.scheduler.proxies import SharedProxies
from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue
from milonga.scheduler.stats import QueueStats, SchedulerStats
from milonga.scheduler.streams import (
    CallbackID,
    EventCallback,
    QueuedEvent,
    Stream,
    StreamKey,
    StreamState,
    database_unreachable,
    stream_key,
    subscription_failed,
)
from milonga.scheduler.timers import DelayedActions
from milonga.tango_errors import root_cause

QueueFactory = Callable[[], "EventQueue[QueuedEvent]"]

SUBSCRIBER_THREADS = 4
RETRY_CAP_SECONDS = 5.0
UNUSED_STREAM_GRACE_SECONDS = 1.0
"""How long a stream left with no callback stays subscribed, in case one comes back.

A callback registered again within this time reuses the subscription.  A new subscription
costs round trips to the server, and events the server pushes in its first milliseconds
can be lost without an error event, before ZeroMQ has passed the subscription on.
"""
SHUTDOWN_SUBSCRIPTION_WAIT_SECONDS = 2.0
"""How long `Subscriptions.close` waits, for all streams together, for cppTango to finish
making the subscriptions it must end.

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


class Subscriptions:
    """The streams of the ``kind`` of scheduler named ``name``, queueing their events in
    ``dispatcher``."""

    def __init__(
        self, name: str, kind: str, dispatcher: Dispatcher[QueuedEvent], logger: logging.Logger
    ) -> None:
        self.name = name
        self._kind = kind
        self.failures = CallbackFailureLog(logger)
        """Where the runner side reports callbacks that raise."""
        self._logger = logger
        self._dispatcher = dispatcher
        self._lock = threading.RLock()
        self._streams: dict[StreamKey, Stream] = {}
        self._ending: set[Stream] = set()  # closed, unsubscribing at Tango's first call
        self._proxies: SharedProxies[tango.DeviceProxy] = SharedProxies(
            tango.DeviceProxy, shared_failure=database_unreachable
        )
        self._later = DelayedActions(f"{name}-timer")
        self._closed = False
        self._subscriber_threads = threading.local()  # .mine is True on this pool's threads
        self._subscriber = ThreadPoolExecutor(
            SUBSCRIBER_THREADS, f"{name}-subscribe", initializer=self._claim_subscriber_thread
        )

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    # -- what the schedulers offer ----------------------------------------------------------

    def register(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallback,
        queue_factory: QueueFactory | None,
        *,
        blocking: bool,
    ) -> Future[CallbackID]:
        """Add ``callback`` to the stream, connecting it if new; see
        `CallbackScheduler.register_event_callback` for the future.  With synchronous
        subscription (PyTango < 10.1), ``blocking`` subscribes in the calling thread, which
        then returns connected; otherwise a subscriber thread does."""
        key = stream_key(device, attr_name, event_type)
        require_callable("callback", callback, "a function taking one tango.EventData")
        registered: Future[CallbackID] = Future()
        with self._lock:
            stream, created = self._stream(key, queue_factory, blocking)
            callback_id = CallbackID(stream.key, next(_serials))
            with stream.delivering:
                stream.callbacks = {**stream.callbacks, callback_id: callback}
                self._catch_up(stream, callback_id, callback)
        if created and blocking and not ASYNC_SUBSCRIPTION:
            self._connect(stream)
        registered.add_done_callback(lambda future: self._withdraw(future, callback_id))
        _chain(stream.connection, registered, callback_id)
        return registered

    def unregister(self, callback_id: CallbackID) -> None:
        """See `CallbackScheduler.unregister_callback`."""
        with self._lock:
            if self._closed:
                return
            stream = self._streams.get(callback_id.stream)
            if stream is None or callback_id not in stream.callbacks:
                raise KeyError(
                    f"callback {callback_id} is not registered with scheduler {self.name}; "
                    "it was unregistered already or belongs to another scheduler"
                )
            self._remove(stream, callback_id)
            self.failures.forget(callback_id)

    def connect(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None,
        *,
        blocking: bool,
    ) -> Future[None]:
        """Keep the stream subscribed until `disconnect`; see `register` and
        `CallbackScheduler.connect_event_stream`."""
        key = stream_key(device, attr_name, event_type)
        connected: Future[None] = Future()
        with self._lock:
            stream, created = self._stream(key, queue_factory, blocking)
            stream.persistent = True
        if created and blocking and not ASYNC_SUBSCRIPTION:
            self._connect(stream)
        _chain(stream.connection, connected, None)
        return connected

    def disconnect(
        self, device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
    ) -> None:
        """See `CallbackScheduler.disconnect_event_stream`."""
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

    def queue_of(
        self, device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
    ) -> EventQueue[QueuedEvent]:
        """See `CallbackScheduler.get_queue`."""
        key = stream_key(device, attr_name, event_type)
        with self._lock:
            stream = self._streams.get(key)
        if stream is None:
            raise UnknownStreamError(
                f"no stream {key} is connected to scheduler {self.name}; register a callback "
                "on it or connect_event_stream() it before sharing its queue"
            )
        return stream.queue

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

    def close(self) -> bool:
        """Unsubscribe every stream and release every proxy; return False, doing nothing,
        if closed already.  Pending registrations are cancelled.

        Blocks for up to `SHUTDOWN_SUBSCRIPTION_WAIT_SECONDS` while cppTango finishes
        subscriptions it must end, and while the subscriber threads finish what they do.
        """
        deadline = time.monotonic() + SHUTDOWN_SUBSCRIPTION_WAIT_SECONDS
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
            for stream in streams:
                stream.move(StreamState.CLOSED)
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
        return True

    def _claim_subscriber_thread(self) -> None:
        self._subscriber_threads.mine = True

    # -- connecting -------------------------------------------------------------------------

    def _stream(
        self, key: StreamKey, queue_factory: QueueFactory | None, blocking: bool
    ) -> tuple[Stream, bool]:
        """The stream for ``key`` and whether it is new.  Holds the lock.

        A new stream starts connecting on the subscriber threads, unless ``blocking`` and
        subscription is synchronous: then the caller connects it, outside the lock.
        Raises TypeError, and creates nothing, if ``queue_factory`` or what it returns is
        wrong.
        """
        if self._closed:
            raise SchedulerShutDownError(
                f"scheduler {self.name} has been shut down; create a new {self._kind}"
            )
        if queue_factory is not None:
            require_callable("queue_factory", queue_factory, _QUEUE_FACTORY_EXPECTED)
        stream = self._streams.get(key)
        if stream is not None:
            return stream, False
        queue = (
            queue_factory() if queue_factory is not None else EventQueue(size=DEFAULT_QUEUE_SIZE)
        )
        if not isinstance(queue, EventQueue):
            raise TypeError(
                f"queue_factory returned {describe(queue)} for stream {key}; expected "
                f"an EventQueue: {_QUEUE_FACTORY_EXPECTED}"
            )
        stream = Stream(key, queue)
        self._streams[key] = stream
        if ASYNC_SUBSCRIPTION or not blocking:
            self._subscriber.submit(self._connect, stream)
        return stream, True

    def _connect(self, stream: Stream, proxy_failure: BaseException | None = None) -> None:
        """Subscribe through the shared proxy of the device; retry while it is unknown.

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
                    if stream.state is StreamState.RETRYING:
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
        if stream.state is StreamState.CONNECTED and not ASYNC_SUBSCRIPTION:
            # Outside the lock: the users' done-callbacks may do anything, shut down included.
            _resolve(stream.connection, None)

    def _acquire_proxy(self, stream: Stream) -> tango.DeviceProxy | None:
        """``stream``'s proxy of its device, acquired now unless it has one; None while
        another build of the database runs.  Holds ``stream.subscribing``."""
        if stream.proxy is None:
            stream.proxy = self._proxies.acquire(
                stream.key.device_trl,
                functools.partial(self._proxy_built, stream) if ASYNC_SUBSCRIPTION else None,
            )
        return stream.proxy

    def _proxy_built(self, stream: Stream, failure: BaseException | None) -> None:
        """The build that ``stream`` waited for has ended: connect it, with the build's
        failure if that holds for it too."""
        self._resubmit(stream, failure)

    def _give_up(self, stream: Stream, error: Exception) -> None:
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

    def _subscribe(self, stream: Stream) -> None:
        assert stream.proxy is not None
        key = stream.key
        on_tango_event = functools.partial(self._on_tango_event, stream)
        if ASYNC_SUBSCRIPTION:
            stream.subscription = stream.proxy.subscribe_event(
                key.attr_name, key.event_type, on_tango_event, sub_mode=tango.EventSubMode.AsyncRead
            )
        else:
            stream.subscription = stream.proxy.subscribe_event(
                key.attr_name, key.event_type, on_tango_event, stateless=True
            )
            stream.move(StreamState.CONNECTED)

    def _retry_later(self, stream: Stream) -> None:
        """Connect ``stream`` again after its own backoff, or its database's if longer."""
        delay = stream.retry_delay
        stream.retry_delay = min(delay * 2, RETRY_CAP_SECONDS)
        if not stream.move(StreamState.RETRYING):
            return
        delay = max(delay, self._proxies.backoff_left(stream.key.device_trl))
        with self._lock:
            if not self._closed and not stream.closed:
                self._later.call_later(delay, functools.partial(self._resubmit, stream))

    def _resubmit(self, stream: Stream, proxy_failure: BaseException | None = None) -> None:
        """Connect ``stream`` again on a subscriber thread, unless it or we are closed."""
        with self._lock, contextlib.suppress(RuntimeError):  # the interpreter is exiting
            if not self._closed and not stream.closed:
                self._subscriber.submit(self._connect, stream, proxy_failure)

    def _mark_connected(self, stream: Stream) -> None:
        """On Tango's thread, at the stream's first good event: resolve its connection."""
        # No scheduler lock here: Tango's thread may hold cppTango's own locks, which a
        # thread holding ours may wait for (a DeviceProxy freed by garbage collection).
        if self._closed or not stream.move(StreamState.CONNECTED):
            return
        # Resolving runs the users' done-callbacks: keep them off Tango's thread.
        with contextlib.suppress(RuntimeError):  # the pool was shut down meanwhile
            self._subscriber.submit(_resolve, stream.connection, None)

    # -- disconnecting ----------------------------------------------------------------------

    def _remove(self, stream: Stream, callback_id: CallbackID) -> None:
        """Take ``callback_id`` off ``stream`` and disconnect it if that was its last
        use.  Holds the lock."""
        stream.callbacks = {k: v for k, v in stream.callbacks.items() if k != callback_id}
        self._disconnect_if_unused(stream)

    def _withdraw(self, registered: Future[CallbackID], callback_id: CallbackID) -> None:
        """Forget a registration whose future the user cancelled."""
        if not registered.cancelled():
            return
        with self._lock:
            stream = self._streams.get(callback_id.stream)
            if stream is not None and callback_id in stream.callbacks:
                self._remove(stream, callback_id)

    def _disconnect_if_unused(self, stream: Stream) -> None:
        """Unsubscribe ``stream`` if nothing keeps it: at once if it is not connected yet,
        else after the grace period.  Holds the lock."""
        if stream.callbacks or stream.persistent or self._closed:
            return
        if stream.state is not StreamState.CONNECTED:
            self._disconnect(stream)
            return
        stream.unused_until = time.monotonic() + UNUSED_STREAM_GRACE_SECONDS
        self._later.call_later(
            UNUSED_STREAM_GRACE_SECONDS, functools.partial(self._disconnect_if_still_unused, stream)
        )

    def _disconnect_if_still_unused(self, stream: Stream) -> None:
        with self._lock:
            unused = not (stream.callbacks or stream.persistent or stream.closed or self._closed)
            if unused and time.monotonic() >= stream.unused_until:
                self._disconnect(stream)

    def _disconnect(self, stream: Stream, error: BaseException | None = None) -> None:
        """Forget ``stream`` and unsubscribe it on a subscriber thread; its pending
        registrations fail with ``error`` if given, else are cancelled.  Holds the lock."""
        del self._streams[stream.key]
        stream.move(StreamState.CLOSED)  # no event of it gets queued once its queue is discarded
        if error is None:
            stream.connection.cancel()
        else:
            _resolve(stream.connection, None, error)
        if not any(other.queue is stream.queue for other in self._streams.values()):
            self._dispatcher.discard(stream.queue)
        self._subscriber.submit(self._unsubscribe, stream)

    def _unsubscribe(self, stream: Stream) -> None:
        """Unsubscribe the closed ``stream`` and release its proxy, without waiting.

        cppTango makes an asynchronous subscription on a thread of its own; unsubscribing
        before it has called the callback for the first time can fail with
        API_EventNotFound and leave the subscription in cppTango, without its callback.
        Until that call, the unsubscription is deferred to it (`_first_call`), or to
        `close`'s deadline.
        """
        with stream.subscribing:
            if stream.proxy is None:
                return
            if stream.subscription is not None and not self._called_or_deferred(stream):
                return
            self._end(stream, unsubscribe=True)

    def _called_or_deferred(self, stream: Stream) -> bool:
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

    def _end(self, stream: Stream, *, unsubscribe: bool) -> None:
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

    def _first_call(self, stream: Stream) -> None:
        """On Tango's thread, at its first call of ``stream``'s callback: hand a deferred
        unsubscription to the subscriber threads, or to a thread of its own once they are
        gone; while `close` still waits for this call, it ends the subscription."""
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
        """At close: end every deferred unsubscription once cppTango has called its
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
        self, stream: Stream, proxy: tango.DeviceProxy, subscription: int
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

    # -- events -----------------------------------------------------------------------------

    def _on_tango_event(self, stream: Stream, event: tango.EventData) -> None:
        """Tango's callback: record and queue the event, nothing else.

        Every event of the process waits for Tango's thread, so a connected stream's
        events take the shortest path there is; the first events take `_first_events`.
        """
        if stream.state is _CONNECTED:
            self._deliver(stream, event)
        else:
            self._first_events(stream, event)

    def _first_events(self, stream: Stream, event: tango.EventData) -> None:
        """`_on_tango_event` until the stream is connected: note Tango's first call, and
        resolve the connection at the first good event."""
        if not stream.called.is_set():
            self._first_call(stream)
        self._deliver(stream, event)
        if ASYNC_SUBSCRIPTION and not event.err:
            self._mark_connected(stream)

    def _catch_up(self, stream: Stream, callback_id: CallbackID, callback: EventCallback) -> None:
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
            return queued._replace(callbacks={**queued.callbacks, callback_id: callback})

        if not self._dispatcher.amend_newest(stream.queue, joined):
            entry = QueuedEvent(latest, stream, {callback_id: callback}, time.monotonic())
            self._dispatcher.put(stream.queue, entry)

    def _deliver(self, stream: Stream, event: tango.EventData) -> None:
        """Make ``event`` the stream's latest and queue it for the callbacks it has now,
        unless it has none or is closed."""
        with stream.delivering:
            stream.last_event = event
            callbacks = stream.callbacks
            if callbacks and stream.state is not _CLOSED:
                entry = QueuedEvent(event, stream, callbacks, time.monotonic())
                self._dispatcher.put(stream.queue, entry)


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
_serials = itertools.count(1)  # process-wide, so that no two schedulers give out equal ids
_CONNECTED, _CLOSED = StreamState.CONNECTED, StreamState.CLOSED  # read once per event
