"""Event streams: what identifies one, the state of one, and the events milonga makes up
for it."""

from __future__ import annotations

import enum
import functools
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import tango

from milonga.scheduler.arguments import describe, printable_name
from milonga.scheduler.queues import EventQueue

EventCallback = Callable[[tango.EventData], Any]
"""A callback of a stream's events: a function, or with `AsyncCallbackScheduler` also a
coroutine function, taking one `tango.EventData`."""

FIRST_RETRY_SECONDS = 0.05

DEFAULT_TANGO_HOST_PORT = 10000
TRL_SCHEME = "tango://"
DEVICE_FORMS = "'domain/family/member' or 'tango://host:port/domain/family/member'"
UNREACHABLE_DATABASE = "API_CantConnectToDatabase"
"""The reason of cppTango's error for a database it cannot connect to."""


@dataclass(frozen=True)
class StreamKey:
    """One Tango event stream: a device (as a full TRL), an attribute and an event type."""

    device_trl: str
    attr_name: str
    event_type: tango.EventType

    def __str__(self) -> str:
        """The full name, database included: ``tango://host:port/dom/fam/member/attr.change``,
        as cppTango names the streams it publishes."""
        kind = self.event_type.name.removesuffix("_EVENT").lower()
        return f"{self.attr_trl}.{kind}"

    @property
    def attr_trl(self) -> str:
        return f"{self.device_trl}/{self.attr_name}"


def device_trl(device: tango.DeviceProxy | str) -> str:
    """The full, lower-case ``tango://address:port/domain/family/member`` of ``device``.

    A bare name is resolved against ``TANGO_HOST``, as `tango.DeviceProxy` would.  The
    database host becomes its IP address, so every spelling of one host names one stream.
    Raises TypeError for what is neither a proxy nor a string, and ValueError for a string
    that is not a device name or TRL, or a bare name while ``TANGO_HOST`` is not set.
    """
    if isinstance(device, tango.DeviceProxy):
        return _trl(device.get_db_host(), str(device.get_db_port()), device.dev_name())
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a tango.DeviceProxy or a string such as {DEVICE_FORMS}, "
            f"got {describe(device)}"
        )
    name = printable_name("device", device, DEVICE_FORMS).strip()
    if name.lower().startswith(TRL_SCHEME):
        host_port, _, device_name = name[len(TRL_SCHEME) :].partition("/")
        host, _, port = host_port.rpartition(":")
        if not host or not _is_port(port) or device_name.count("/") != 2:
            raise ValueError(
                f"device {device!r} is not a valid TRL; expected "
                "'tango://host:port/domain/family/member' with a port from 1 to 65535"
            )
        return _trl(host, port, device_name)
    if name.count("/") != 2:
        raise ValueError(f"device {device!r} is not a device name; expected {DEVICE_FORMS}")
    tango_host = os.environ.get("TANGO_HOST", "").split(",")[0].strip()
    if not tango_host:
        raise ValueError(
            f"cannot tell which Tango database device {device!r} is in: TANGO_HOST is not "
            "set; set it or pass a full 'tango://host:port/domain/family/member'"
        )
    host, _, port = tango_host.partition(":")
    port = port or str(DEFAULT_TANGO_HOST_PORT)
    if not host.isprintable() or not _is_port(port):
        raise ValueError(
            f"TANGO_HOST {tango_host!r} is not 'host:port' with a port from 1 to 65535; "
            f"correct it or pass device {device!r} as a full "
            "'tango://host:port/domain/family/member'"
        )
    return _trl(host, port, name)


def _is_port(port: str) -> bool:
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def _trl(host: str, port: str, device_name: str) -> str:
    return f"{TRL_SCHEME}{_address(host)}:{port}/{device_name}".lower()


@functools.lru_cache(maxsize=256)
def _address(host: str) -> str:
    """``host``'s IP address, or ``host`` itself if it cannot be resolved."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):  # UnicodeError: not a valid host name at all
        return host


def stream_key(
    device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
) -> StreamKey:
    """The key of the stream of ``event_type`` events of ``device``'s ``attr_name``.

    Raises TypeError or ValueError, naming the argument, for a device as `device_trl`
    does, an attribute name that is not a printable string, or an event type that is not
    a `tango.EventType`.
    """
    return StreamKey(
        device_trl(device),
        printable_name("attr_name", attr_name, "'position'").lower(),
        checked_event_type(event_type),
    )


def checked_event_type(event_type: object) -> tango.EventType:
    """``event_type`` if it is a `tango.EventType`; else a TypeError that names the member
    a string such as ``"change"`` probably meant."""
    if isinstance(event_type, tango.EventType):
        return event_type
    names = [name for name in dir(tango.EventType) if name.endswith("_EVENT")]
    members = {name.removesuffix("_EVENT").lower(): name for name in names}
    meant = members.get(str(event_type).lower().removesuffix("_event"))
    use = f"tango.EventType.{meant}" if meant else "a member such as tango.EventType.CHANGE_EVENT"
    raise TypeError(f"event_type must be a tango.EventType, got {describe(event_type)}; use {use}")


def subscription_failed(key: StreamKey, failure: tango.DevFailed) -> tango.EventData:
    """An error event telling callbacks that ``key`` could not be subscribed, and why."""
    event = tango.EventData()
    event.err = True
    event.errors = failure
    if hasattr(tango, "EventReason"):  # events carry no reason before PyTango 10.1
        event.event_reason = tango.EventReason.SubFail
    event.attr_name = key.attr_trl
    event.event = key.event_type.name.removesuffix("_EVENT").lower()
    event.reception_date = tango.TimeVal.now()
    return event


def database_unreachable(failure: BaseException) -> bool:
    """Whether ``failure`` says that the database could not be reached, so that it holds
    for every device of that database, not only for the one a proxy was built for."""
    return isinstance(failure, tango.DevFailed) and any(
        error.reason == UNREACHABLE_DATABASE for error in failure.args
    )


@dataclass(frozen=True)
class CallbackID:
    """Identifies one registered callback; pass it to ``unregister_callback``."""

    stream: StreamKey
    serial: int


class StreamState(enum.Enum):
    """Where a stream is in its life: it only moves forward, and CLOSED is final."""

    CONNECTING = "connecting"
    """Subscribing for the first time."""
    RETRYING = "retrying"
    """A try failed (the device unknown or not running); another follows after a backoff."""
    CONNECTED = "connected"
    """Subscribed, and with asynchronous subscription the first good event has arrived."""
    CLOSED = "closed"
    """Forgotten by the scheduler: unsubscribed, or being unsubscribed."""


class QueuedEvent(NamedTuple):
    """An event waiting in a queue with the callbacks registered when it arrived."""

    event: tango.EventData
    stream: Stream
    callbacks: Mapping[CallbackID, EventCallback]
    """The stream's `Stream.callbacks` when it arrived (never changed in place), or for a
    catch-up those that still need this event."""
    enqueued_at: float


@dataclass(eq=False)
class Stream:
    """One stream of a scheduler: its queue, callbacks, subscription and state."""

    key: StreamKey
    queue: EventQueue[QueuedEvent]
    callbacks: dict[CallbackID, EventCallback] = field(default_factory=dict)
    """Replaced, never changed in place, so that a snapshot can be taken without a lock."""
    persistent: bool = False
    """Kept subscribed without callbacks, by ``connect_event_stream``."""
    state: StreamState = StreamState.CONNECTING
    proxy: tango.DeviceProxy | None = None
    subscription: int | None = None
    last_event: tango.EventData | None = None
    connection: Future[None] = field(default_factory=Future)
    retry_delay: float = field(default_factory=lambda: FIRST_RETRY_SECONDS)
    unused_until: float = 0.0
    subscribing: threading.Lock = field(default_factory=threading.Lock)
    """Held while connecting or unsubscribing, so that the two never overlap."""
    delivering: threading.Lock = field(default_factory=threading.Lock)
    """Held while an event is recorded and queued, a callback added, or the state changed:
    a callback added while an event arrives gets that event once, before the next, and no
    event is queued once the stream is closed."""
    called: threading.Event = field(default_factory=threading.Event)
    """Set when Tango first calls the stream's callback: cppTango has finished making the
    subscription, so unsubscribing it can no longer fail."""
    ending: threading.Lock = field(default_factory=threading.Lock)
    """Held while ``called`` is set or ``end_deferred`` read or changed."""
    end_deferred: bool = False
    """Whether the closed stream's unsubscription waits for Tango's first call."""
    orphaned: bool = False
    """Whether the scheduler's shutdown gave up waiting for that call."""

    @property
    def closed(self) -> bool:
        return self.state is StreamState.CLOSED

    def move(self, state: StreamState) -> bool:
        """Enter ``state`` unless closed; return whether it did."""
        with self.delivering:
            if self.state is StreamState.CLOSED:
                return False
            self.state = state
            return True
