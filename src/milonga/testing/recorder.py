"""`TangoEvents`: the event recorder behind the ``tango_events`` fixture.

It subscribes through a `CallbackScheduler` of its own, so Tango's event thread only
queues each event: recording, and every assertion's matching, happen elsewhere, and a slow
test never delays the events of other subscriptions.  An assertion waits on a condition
that each recorded event signals, so it returns the moment the event it waits for is
there, and fails once its time is up.
"""

from __future__ import annotations

import enum
import functools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import tango

from milonga.monitor.snapshot import short_name
from milonga.scheduler import CallbackScheduler
from milonga.scheduler.streams import CallbackID, StreamKey, device_trl, stream_key
from milonga.tango_errors import describe_errors, describe_failure
from milonga.testing.events import Expectation, RecordedEvent, render_events
from milonga.testing.matching import describe_value

QUEUE_SIZE = 100_000
"""Events a recorded stream may have waiting to be recorded before the oldest is dropped:
recording is quick, so only a flood of this size while the process is starved drops any."""


class EventAssertionError(AssertionError):
    """An event a test expected did not arrive in time, or one it ruled out did."""


class _Any(enum.Enum):
    VALUE = "any value"


ANY_VALUE = _Any.VALUE
"""The default of ``value``: any value, or none (an error event)."""

MISSED_EVENTS = "API_MissedEvents"
"""The reason of the error event cppTango sends a callback when events were lost."""
NO_FIRST_EVENT = frozenset({tango.EventType.DATA_READY_EVENT})
"""Event types whose subscription sends no event of the current value."""

Since = float | datetime | RecordedEvent | None
"""Where an assertion starts looking: a time (seconds since the epoch, as `time.time`, or
an aware or local `datetime`), just after a recorded event, or (None) the default."""
Predicate = Callable[[RecordedEvent], bool]


@dataclass
class _Recording:
    """One subscribed stream and its events, oldest first."""

    key: StreamKey
    name: str
    """``dev/ice/name/attr.change``, as failures name it."""
    events: list[RecordedEvent] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    """The index in `events` of each event, by its `id`: where ``after=event`` starts."""
    labels: tuple[str, ...] | None = None
    """The attribute's enum labels, read with its first value; None until then."""


class TangoEvents:
    """Records the events of the streams a test subscribes to, and asserts on them.

    ``timeout`` is how long `subscribe` and `assert_event` wait by default (the fixture
    passes the ini option ``tango_event_timeout``); times in failure messages count from
    ``started`` (seconds since the epoch; default: now).
    `close` (or leaving a ``with`` block) unsubscribes everything; the ``tango_events``
    fixture closes it after the test.
    """

    def __init__(self, timeout: float, *, started: float | None = None) -> None:
        self.timeout = _seconds("timeout", timeout)
        self.started = time.time() if started is None else started
        self._scheduler = CallbackScheduler(name="tango_events")
        self._changed = threading.Condition()
        self._recordings: dict[StreamKey, _Recording] = {}

    def subscribe(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType = tango.EventType.CHANGE_EVENT,
    ) -> None:
        """Record every event of the stream from now on, starting with its current value.

        Returns once the stream is connected and its first event (the current value) is
        recorded, except for data-ready events, which have none; raises
        `EventAssertionError` if that takes longer than the timeout, quoting the last
        subscription error, or if subscribing fails in a way no retry mends.  Subscribing
        to a stream recorded already does nothing.
        """
        __tracebackhide__ = True
        key = stream_key(device, attr_name, event_type)
        with self._changed:
            if key in self._recordings:
                return
            recording = _Recording(key, _short_stream(key))
            self._recordings[key] = recording
        scheduler = self._scheduler
        connected = scheduler.register_event_callback(
            device,
            attr_name,
            key.event_type,
            functools.partial(self._record, recording),
            queue_factory=lambda: scheduler.allocate_queue(queue_size=QUEUE_SIZE),
        )
        deadline = time.monotonic() + self.timeout
        try:
            connected.result(timeout=self.timeout)
        except FutureTimeout:
            self._withdraw(key, connected)
            raise EventAssertionError(self._not_connected(recording)) from None
        except tango.DevFailed as failure:
            self._forget(key)
            raise EventAssertionError(
                f"cannot subscribe to {recording.name}: {describe_failure(failure)}"
            ) from None
        if key.event_type in NO_FIRST_EVENT:
            return
        left = max(0.0, deadline - time.monotonic())
        if self._first(recording, 0, -math.inf, _sent_by_tango, left) is None:
            self._withdraw(key, connected)
            raise EventAssertionError(
                f"{recording.name} was connected, but its first event (the current value) did "
                f"not come within {self.timeout:g} s; raise the ini option tango_event_timeout"
            )

    def assert_event(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        *,
        value: object = ANY_VALUE,
        predicate: Predicate | None = None,
        within: float | None = None,
        after: Since = None,
        event_type: tango.EventType | None = None,
    ) -> RecordedEvent:
        """The first event of the stream received since ``after`` whose value is
        ``value`` (see `milonga.testing.matching`) and for which ``predicate`` holds.

        By default every event since the subscription counts, so one that arrived before
        this call does.  Waits at most ``within`` seconds (default: the timeout) and
        returns as soon as such an event is recorded; else raises `EventAssertionError`
        listing every event of the stream.  ``event_type`` picks the stream when the
        attribute's events of several types are recorded.
        """
        __tracebackhide__ = True
        recording = self._recording(device, attr_name, event_type)
        wait = self.timeout if within is None else _seconds("within", within)
        start, since = self._start(recording, after)
        found = self._first(recording, start, since, _test(value, predicate), wait)
        if found is not None:
            return found
        expectation = _expectation(recording, value, predicate)
        counted = self._since_text(recording, after, since)
        raise EventAssertionError(
            "\n".join(
                [
                    f"no {expectation} arrived within {wait:g} s (counting {counted}).",
                    *self._history(recording),
                ]
            )
        )

    def assert_no_event(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        *,
        during: float,
        value: object = ANY_VALUE,
        predicate: Predicate | None = None,
        after: Since = None,
        event_type: tango.EventType | None = None,
    ) -> None:
        """Wait ``during`` seconds, and raise `EventAssertionError` the moment an event of
        the stream received since ``after`` (default: this call) has ``value`` and
        satisfies ``predicate``."""
        __tracebackhide__ = True
        recording = self._recording(device, attr_name, event_type)
        wait = _seconds("during", during)
        if after is None:
            after = time.time()
        start, since = self._start(recording, after)
        found = self._first(recording, start, since, _test(value, predicate), wait)
        if found is None:
            return
        expectation = _expectation(recording, value, predicate)
        counted = self._since_text(recording, after, since)
        raise EventAssertionError(
            "\n".join(
                [
                    f"an {expectation} arrived at {found.received - self.started:.3f} s, "
                    f"where none was expected (for {wait:g} s, counting {counted}).",
                    *self._history(recording, marked=found),
                ]
            )
        )

    def events(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType | None = None,
    ) -> list[RecordedEvent]:
        """Every event of the stream recorded so far, oldest first."""
        __tracebackhide__ = True
        recording = self._recording(device, attr_name, event_type)
        with self._changed:
            return list(recording.events)

    def close(self) -> None:
        """Unsubscribe every stream and stop recording.  Idempotent."""
        self._scheduler.shutdown()

    def __enter__(self) -> TangoEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording ----------------------------------------------------------------------

    def _record(self, recording: _Recording, event: tango.EventData) -> None:
        """On the scheduler's worker: keep ``event`` and wake every waiting assertion."""
        if recording.labels is None and not event.err:
            recording.labels = _enum_labels(recording.key)
        recorded = _decoded(recording, event)
        with self._changed:
            recording.positions[id(recorded)] = len(recording.events)
            recording.events.append(recorded)
            self._changed.notify_all()

    def _first(
        self,
        recording: _Recording,
        start: int,
        since: float,
        test: Predicate,
        wait: float,
    ) -> RecordedEvent | None:
        """The first event of ``recording`` from index ``start`` received at ``since`` or
        later that passes ``test``, waiting up to ``wait`` seconds for it; tests run
        outside the lock, so a slow predicate never holds the recording up."""
        deadline = time.monotonic() + wait
        index = start
        while True:
            with self._changed:
                while index == len(recording.events):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._changed.wait(left)
                fresh = recording.events[index:]
            index += len(fresh)
            for event in fresh:
                if event.received >= since and test(event):
                    return event

    # -- finding streams and times ----------------------------------------------------------

    def _recording(
        self,
        device: tango.DeviceProxy | str,
        attr_name: str,
        event_type: tango.EventType | None,
    ) -> _Recording:
        """The recording of the stream; a ValueError saying what to subscribe first if
        it is not recorded, or which event type to name if several are."""
        __tracebackhide__ = True  # a mistake of the test's, shown at its line
        if event_type is not None:
            key = stream_key(device, attr_name, event_type)
            with self._changed:
                recording = self._recordings.get(key)
            if recording is None:
                raise ValueError(
                    f"{_short_stream(key)} is not recorded; call "
                    "tango_events.subscribe(device, attr_name, event_type) first"
                )
            return recording
        trl, attribute = device_trl(device), attr_name.lower()
        with self._changed:
            found = [
                recording
                for key, recording in self._recordings.items()
                if key.device_trl == trl and key.attr_name == attribute
            ]
        if len(found) == 1:
            return found[0]
        name = f"{short_name(trl)}/{attribute}"
        if not found:
            raise ValueError(
                f"no event of {name} is recorded; call tango_events.subscribe(device, "
                "attr_name) first"
            )
        kinds = ", ".join(sorted(recording.key.event_type.name for recording in found))
        raise ValueError(
            f"events of {name} of several types are recorded ({kinds}); "
            "say which with event_type=tango.EventType..."
        )

    def _start(self, recording: _Recording, after: Since) -> tuple[int, float]:
        """Where to start looking in ``recording``: an index, and the earliest reception
        time (seconds since the epoch) that counts."""
        __tracebackhide__ = True  # a mistake of the test's, shown at its line
        if after is None:
            return 0, -math.inf
        if isinstance(after, RecordedEvent):
            with self._changed:
                index = recording.positions.get(id(after))
            if index is not None and recording.events[index] is after:
                return index + 1, -math.inf
            raise ValueError(
                f"after={after.stream} event at {after.received - self.started:.3f} s "
                f"is not an event of {recording.name}; pass an event this stream's "
                "assertions returned, or a time"
            )
        if isinstance(after, datetime):
            return 0, after.timestamp()
        if isinstance(after, int | float) and not isinstance(after, bool):
            return 0, float(after)
        raise TypeError(
            f"after must be a time (seconds since the epoch as time.time() gives, or a "
            f"datetime) or a RecordedEvent, got {type(after).__name__}"
        )

    def _since_text(self, recording: _Recording, after: Since, since: float) -> str:
        """What the assertion counted, in words."""
        if after is None:
            return "every event since the subscription"
        if isinstance(after, RecordedEvent):
            return f"events after the one at {after.received - self.started:.3f} s"
        if since < self.started:
            return f"events since {datetime.fromtimestamp(since).astimezone().isoformat()}"
        return f"events from {since - self.started:.3f} s"

    # -- failure messages -------------------------------------------------------------------

    def _history(self, recording: _Recording, marked: RecordedEvent | None = None) -> list[str]:
        """Every event of ``recording``, and what tells whether some were lost."""
        with self._changed:
            events = list(recording.events)
        return [
            f"{len(events)} event(s) of {recording.name} recorded, at seconds since the "
            "test started:",
            *render_events(events, self.started, marked=marked),
            self._missed(recording, events),
        ]

    def _missed(self, recording: _Recording, events: list[RecordedEvent]) -> str:
        """Whether the stream's subscription reported missed events, and whether the
        recorder dropped any."""
        dropped = sum(
            queue.dropped
            for queue in self._scheduler.stats().queues
            if str(recording.key) in queue.streams
        )
        drops = (
            f" The recorder dropped {dropped} event(s) it could not record in time."
            if dropped
            else ""
        )
        return _missed_events(events) + drops

    def _not_connected(self, recording: _Recording) -> str:
        """Why ``recording``'s stream is not connected after the timeout."""
        with self._changed:
            errors = [event.error for event in recording.events if event.error is not None]
        last = f"; the last attempt failed with {errors[-1]}" if errors else ""
        return (
            f"{recording.name} was not connected within {self.timeout:g} s{last}. Check "
            "that its server runs and that the attribute sends these events, or raise "
            "the ini option tango_event_timeout."
        )

    def _withdraw(self, key: StreamKey, connected: Future[CallbackID]) -> None:
        """Forget ``key``'s recording and withdraw its registration: cancelled while it
        is pending, unregistered if it connected meanwhile.  A later `subscribe` to the
        stream then starts afresh."""
        self._forget(key)
        if not connected.cancel() and connected.exception() is None:
            self._scheduler.unregister_callback(connected.result())

    def _forget(self, key: StreamKey) -> None:
        with self._changed:
            self._recordings.pop(key, None)


def _missed_events(events: list[RecordedEvent]) -> str:
    """What cppTango told the stream's callback of missed events: an ``API_MissedEvents``
    error event for each gap it found in the publisher's event numbers.  Counted from the
    recorded events, not by querying the event system, which would empty the
    performance samples that the health check reports."""
    gaps = sum(1 for event in events if (event.error or "").startswith(f"{MISSED_EVENTS}:"))
    if not gaps:
        return "Its subscription reported no missed events."
    return (
        f"Its subscription reported {gaps} gap(s) of missed events: events were lost on "
        "the way, not late."
    )


def _decoded(recording: _Recording, event: tango.EventData) -> RecordedEvent:
    """What a test needs of ``event``, decoded once."""
    received = event.reception_date.totime()
    reason = getattr(event, "event_reason", None)
    reason_name = None if reason is None else reason.name
    value: object = None
    quality: str | None = None
    error: str | None = None
    if event.err:
        error = _first_error(event.errors)
    elif (attr_value := getattr(event, "attr_value", None)) is not None:
        value, quality = attr_value.value, attr_value.quality.name
    labels = recording.labels or ()
    return RecordedEvent(
        recording.name, received, value, quality, reason_name, error, labels, event
    )


def _first_error(errors: Any) -> str:
    """The root error of an error event, as ``REASON: description``."""
    if isinstance(errors, tango.DevFailed):
        errors = errors.args
    return describe_errors(errors).partition("\n")[0] or "an error event without an error"


def _enum_labels(key: StreamKey) -> tuple[str, ...]:
    """The enum labels of a ``DevEnum`` attribute; () for another type, or if its
    configuration cannot be read."""
    try:
        config = tango.DeviceProxy(key.device_trl).attribute_query(key.attr_name)
    except tango.DevFailed:
        return ()
    if int(config.data_type) != int(tango.CmdArgType.DevEnum):
        return ()
    return tuple(config.enum_labels)


def _expectation(recording: _Recording, value: object, predicate: Predicate | None) -> Expectation:
    return Expectation(
        recording.name,
        None if value is ANY_VALUE else describe_value(value, recording.labels or ()),
        None if predicate is None else getattr(predicate, "__name__", repr(predicate)),
    )


def _test(value: object, predicate: Predicate | None) -> Predicate:
    """Whether an event has ``value`` (any, by default) and satisfies ``predicate``."""

    def test(event: RecordedEvent) -> bool:
        if value is not ANY_VALUE and not event.matches(value):
            return False
        return predicate is None or bool(predicate(event))

    return test


def _sent_by_tango(event: RecordedEvent) -> bool:
    """Whether ``event`` tells of the stream rather than of a failed attempt to subscribe
    to it: cppTango's ``SubFail`` events (PyTango 10.1 and later subscribe asynchronously
    and go on trying), or the scheduler's (`milonga.scheduler.streams.subscription_failed`,
    events of no device).  A connected stream's first other event is its current value."""
    if event.error is None:
        return True
    return event.reason != "SubFail" and getattr(event.data, "device", None) is not None


def _seconds(name: str, value: object) -> float:
    """``value`` as a number of seconds; a ValueError or TypeError naming ``name``."""
    __tracebackhide__ = True  # a mistake of the test's, shown at its line
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _short_stream(key: StreamKey) -> str:
    """``dev/ice/name/attr.change``."""
    return short_name(str(key))
