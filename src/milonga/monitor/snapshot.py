"""One process's event system as `QueryEventSystem` describes it, parsed into typed values.

A device server's admin command ``QueryEventSystem`` (and, for the calling process,
``tango.ApiUtil.instance().query_event_system()``) returns JSON of this shape, version 1::

    {"version": 1,
     "server": {"event_counters": {STREAM: COUNTER, ...}, "perf": [SAMPLE, ...] | null} | null,
     "client": {"event_callbacks": {TOPIC: {...}, ...}, "not_connected": [...],
                "event_channels": {CHANNEL: {"endpoint": ...}}, "perf": [...] | null} | null}

The server side is the process as a publisher, the client side the process as a
subscriber.  ``perf`` is null while performance monitoring is off.  Keys this module does
not know are ignored, as cppTango may add some.  Nothing here imports Tango.

cppTango's ``event_counters`` hold the counter the *next* event on each stream will carry:
1 when a stream is created, n + 1 after n pushes.  `ServerSide.publishers` holds the
counter of the last event pushed instead, one less, so that it equals the last received
counter of a subscriber that lost nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

SUPPORTED_VERSION = 1

_TRL_PREFIX = re.compile(r"^tango://[^/]+/")


class SnapshotFormatError(ValueError):
    """The text is not a `QueryEventSystem` reply this version of milonga understands."""


def short_name(name: str) -> str:
    """``tango://host:port/dev/attr.kind`` without its ``tango://host:port/`` prefix."""
    return _TRL_PREFIX.sub("", name)


class ServerPerfSample(NamedTuple):
    """One event the process pushed while performance monitoring was on.

    A named tuple rather than a dataclass, as `ClientPerfSample`: a reply holds up to 256
    of each, and a tuple is several times quicker to make.
    """

    micros_since_last_event: int | None
    """Time since the previous sampled push; None for the first one after monitoring began."""
    push_event_micros: int
    """How long handing the event to ZMQ took."""


class ClientPerfSample(NamedTuple):
    """One event the process's event consumer thread received while monitoring was on."""

    attr_name: str
    """The attribute (at most 31 characters); empty for discarded or non-attribute events."""
    micros_since_last_event: int | None
    sleep_micros: int
    """How long the consumer thread waited for this event."""
    process_micros: int
    """How long handling the event took, every callback included."""
    first_callback_latency_micros: int | None
    """From the event's server timestamp to its first callback; None without a value."""
    callback_count: int
    wake_count: int
    """How often the consumer thread woke up while waiting for this event."""
    discarded: bool
    """The event repeated the previous server counter and was dropped unprocessed."""


@dataclass(frozen=True)
class Subscription:
    """One event topic the process subscribes to, with what it has received on it."""

    topic: str
    """``tango://host:port/dev/attr.idl5_change``: the stream plus a compatibility tag."""
    channel: str
    """The admin device of the publishing server."""
    callback_count: int
    server_counter: int
    """The server counter carried by the last event received."""
    event_count: int
    """Events received and not discarded since the subscription began."""
    missed_event_count: int
    discarded_event_count: int
    last_resubscribed: str | None
    """When the subscription was last renewed; None if never.  cppTango renews every
    subscription about every 200 s, and again after a lost connection."""


@dataclass(frozen=True)
class NotConnected:
    """A subscription the process keeps trying to connect, such as to a stopped server."""

    device: str
    attribute: str
    event_type: str
    last_heartbeat: str
    """When the process last tried to connect it."""
    tango_host: str | None

    @property
    def stream(self) -> str:
        """``dev/attr.kind``, as streams are shown elsewhere."""
        return f"{short_name(self.device)}/{self.attribute}.{self.event_type}"

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        """What identifies the entry from one snapshot to the next."""
        return (self.device.lower(), self.attribute.lower(), self.event_type, self.tango_host)


@dataclass(frozen=True)
class ServerSide:
    """The process as a publisher."""

    publishers: Mapping[str, int]
    """The server counter of the last event pushed on each stream, by full stream name;
    0 before the first push.  The reply's ``event_counters`` minus one, never below 0."""
    perf: tuple[ServerPerfSample, ...] | None
    """Samples taken since the previous query by anyone; None while monitoring is off."""


@dataclass(frozen=True)
class ClientSide:
    """The process as a subscriber."""

    subscriptions: Mapping[str, Subscription]
    """By full topic name."""
    not_connected: tuple[NotConnected, ...]
    channels: Mapping[str, str]
    """The ZMQ endpoint of each publishing server the process is connected to."""
    perf: tuple[ClientPerfSample, ...] | None


@dataclass(frozen=True)
class Snapshot:
    """One process's event system at one moment."""

    server: ServerSide | None
    """None if the process cannot publish through ZMQ (a pure client)."""
    client: ClientSide | None
    """None if the process has never subscribed to an event."""
    version: int = SUPPORTED_VERSION

    @property
    def perf_monitoring(self) -> bool | None:
        """Whether performance monitoring is on; None if the snapshot cannot tell."""
        side = self.server or self.client
        return None if side is None else side.perf is not None


EMPTY_SNAPSHOT = Snapshot(server=None, client=None)
"""What a process that has neither published nor subscribed reports."""


def parse_snapshot(reply: str | Mapping[str, Any]) -> Snapshot:
    """Parse a `QueryEventSystem` reply, as JSON text or as the decoded object.

    Raises `SnapshotFormatError` if it is not JSON, not version 1, or lacks a field.
    """
    if isinstance(reply, str):
        try:
            reply = json.loads(reply)
        except json.JSONDecodeError as error:
            raise SnapshotFormatError(f"the reply is not JSON: {error}") from None
    top = _object(reply, "the reply")
    version = top.get("version")
    if version != SUPPORTED_VERSION:
        raise SnapshotFormatError(
            f"the reply has version {version!r} but milonga reads version {SUPPORTED_VERSION}; "
            "use a milonga release made for this Tango version"
        )
    server = top.get("server")
    client = top.get("client")
    return Snapshot(
        server=None if server is None else _server_side(_object(server, "server")),
        client=None if client is None else _client_side(_object(client, "client")),
        version=SUPPORTED_VERSION,
    )


def _server_side(server: Mapping[str, Any]) -> ServerSide:
    counters = _object(server.get("event_counters"), "server.event_counters")
    perf = server.get("perf")
    return ServerSide(
        publishers=_publishers(counters),
        perf=None
        if perf is None
        else tuple(
            _server_sample(_object(item, "server.perf[]")) for item in _list(perf, "server.perf")
        ),
    )


def _publishers(counters: Mapping[str, Any]) -> dict[str, int]:
    """`ServerSide.publishers` from the reply's ``event_counters``; an error names the
    stream, put together only for the error."""
    publishers = {}
    for stream, count in counters.items():
        if type(count) is not int:
            _int(count, f"server.event_counters[{stream!r}]")  # raises, naming the stream
        publishers[stream] = count - 1 if count > 0 else 0
    return publishers


def _server_sample(sample: Mapping[str, Any]) -> ServerPerfSample:
    return ServerPerfSample(
        micros_since_last_event=_optional_int(sample, "micros_since_last_event", "server.perf[]"),
        push_event_micros=_int_field(sample, "push_event_micros", "server.perf[]"),
    )


def _client_side(client: Mapping[str, Any]) -> ClientSide:
    callbacks = _object(client.get("event_callbacks"), "client.event_callbacks")
    channels = _object(client.get("event_channels", {}), "client.event_channels")
    perf = client.get("perf")
    return ClientSide(
        subscriptions={topic: _subscription(topic, entry) for topic, entry in callbacks.items()},
        not_connected=tuple(
            _not_connected(_object(item, "client.not_connected[]"))
            for item in _list(client.get("not_connected", []), "client.not_connected")
        ),
        channels={channel: _endpoint(channel, entry) for channel, entry in channels.items()},
        perf=None
        if perf is None
        else tuple(
            _client_sample(_object(item, "client.perf[]")) for item in _list(perf, "client.perf")
        ),
    )


_new = object.__new__
"""Makes a `Subscription` whose fields `_subscription` then sets at once: equal in every
way to one its ``__init__`` makes, in a third of the time, as the fields of a frozen
dataclass are otherwise set one by one through ``object.__setattr__``."""


def _subscription(topic: str, entry: Any) -> Subscription:
    """The subscription to ``topic`` of one ``client.event_callbacks`` entry; an error
    names the field.  Every poll reads one per subscription of every server, so one that
    is as cppTango writes it is checked in one go."""
    if type(entry) is dict:
        get = entry.get
        channel, resubscribed = get("channel_name"), get("last_resubscribed")
        callbacks, counter = get("callback_count"), get("server_counter")
        events, missed = get("event_count"), get("missed_event_count")
        discarded = get("discarded_event_count")
        if (
            type(channel) is str
            and type(callbacks) is int
            and type(counter) is int
            and type(events) is int
            and type(missed) is int
            and type(discarded) is int
        ):
            subscription = _new(Subscription)
            subscription.__dict__.update(
                topic=topic,
                channel=channel,
                callback_count=callbacks,
                server_counter=counter,
                event_count=events,
                missed_event_count=missed,
                discarded_event_count=discarded,
                last_resubscribed=None if resubscribed is None else str(resubscribed),
            )
            return subscription
    return _checked_subscription(topic, _object(entry, "client.event_callbacks", topic))


def _checked_subscription(topic: str, entry: Mapping[str, Any]) -> Subscription:
    """`_subscription` field by field, raising for the first field that is wrong; the
    error names it as ``client.event_callbacks[topic].field``, put together only for the
    error."""
    try:
        resubscribed = entry.get("last_resubscribed")
        return Subscription(
            topic=topic,
            channel=_str_field(entry, "channel_name", ""),
            callback_count=_int_field(entry, "callback_count", ""),
            server_counter=_int_field(entry, "server_counter", ""),
            event_count=_int_field(entry, "event_count", ""),
            missed_event_count=_int_field(entry, "missed_event_count", ""),
            discarded_event_count=_int_field(entry, "discarded_event_count", ""),
            last_resubscribed=None if resubscribed is None else str(resubscribed),
        )
    except SnapshotFormatError as error:
        raise SnapshotFormatError(f"client.event_callbacks[{topic!r}]{error}") from None


def _endpoint(channel: str, entry: Any) -> str:
    """The ZMQ endpoint of one ``client.event_channels`` entry; an error names it."""
    if type(entry) is dict and type(endpoint := entry.get("endpoint")) is str:
        return endpoint  # as cppTango writes it, quickly
    return _str_field(_object(entry, "client.event_channels", channel), "endpoint", "channel")


def _not_connected(entry: Mapping[str, Any]) -> NotConnected:
    where = "client.not_connected[]"
    tango_host = entry.get("tango_host")
    return NotConnected(
        device=_str_field(entry, "device", where),
        attribute=_str_field(entry, "attribute", where),
        event_type=_str_field(entry, "event_type", where),
        last_heartbeat=str(entry.get("last_heartbeat")),
        tango_host=None if tango_host is None else str(tango_host),
    )


def _client_sample(sample: Mapping[str, Any]) -> ClientPerfSample:
    """The sample of one ``client.perf`` entry; an error names the field.  A reply holds up
    to 256 of them, so one that is as cppTango writes it is checked in one go."""
    get = sample.get
    since, latency = get("micros_since_last_event"), get("first_callback_latency_micros")
    sleep, process, callbacks = get("sleep_micros"), get("process_micros"), get("callback_count")
    wakes, discarded = get("wake_count"), get("discarded")
    if (
        type(sleep) is int
        and type(process) is int
        and type(callbacks) is int
        and type(wakes) is int
        and type(discarded) is bool
        and (since is None or type(since) is int)
        and (latency is None or type(latency) is int)
    ):
        name = get("attr_name")
        return ClientPerfSample(
            str(name or ""), since, sleep, process, latency, callbacks, wakes, discarded
        )
    return _checked_client_sample(sample)


def _checked_client_sample(sample: Mapping[str, Any]) -> ClientPerfSample:
    """`_client_sample` field by field, raising for the first field that is wrong."""
    where = "client.perf[]"
    discarded = sample.get("discarded")
    if not isinstance(discarded, bool):
        raise SnapshotFormatError(f"{where}.discarded is {discarded!r}, not true or false")
    return ClientPerfSample(
        attr_name=str(sample.get("attr_name") or ""),
        micros_since_last_event=_optional_int(sample, "micros_since_last_event", where),
        sleep_micros=_int_field(sample, "sleep_micros", where),
        process_micros=_int_field(sample, "process_micros", where),
        first_callback_latency_micros=_optional_int(sample, "first_callback_latency_micros", where),
        callback_count=_int_field(sample, "callback_count", where),
        wake_count=_int_field(sample, "wake_count", where),
        discarded=discarded,
    )


def _object(value: Any, where: str, key: str | None = None) -> Mapping[str, Any]:
    """``value`` if it is a JSON object; ``where`` (then ``[key]``, if given) names it in
    the error."""
    if type(value) is dict:
        return value  # what the JSON decoder makes, told quicker than by the ABC below
    if not isinstance(value, Mapping):
        where = where if key is None else f"{where}[{key!r}]"
        raise SnapshotFormatError(f"{where} is {_kind(value)}, not a JSON object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SnapshotFormatError(f"{where} is {_kind(value)}, not a JSON array")
    return value


def _int(value: Any, where: str, key: str | None = None) -> int:
    """``value`` if it is an integer (not a boolean); ``where`` (then ``.key``, if given)
    names it in the error.  The name is put together only for the error: replies carry
    hundreds of samples."""
    if type(value) is not int:
        where = where if key is None else f"{where}.{key}"
        raise SnapshotFormatError(f"{where} is {_kind(value)}, not an integer")
    return value


def _int_field(entry: Mapping[str, Any], key: str, where: str) -> int:
    """``entry[key]`` if it is an integer; otherwise `_int` raises, naming it."""
    value = entry.get(key)
    return value if type(value) is int else _int(value, where, key)


def _optional_int(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    """``entry[key]`` if it is an integer or null; otherwise `_int` raises, naming it."""
    value = entry.get(key)
    return value if value is None or type(value) is int else _int(value, where, key)


def _str_field(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise SnapshotFormatError(f"{where}.{key} is {_kind(value)}, not a string")
    return value


def _kind(value: Any) -> str:
    return "missing or null" if value is None else repr(value)[:40]
