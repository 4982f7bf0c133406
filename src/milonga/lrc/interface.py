"""Which protocol a device speaks, and its LRC event streams kept connected on a scheduler.

`connect_lrc_interface` remembers the negotiated version per scheduler and device, so that
`invoke_lrc` on a connected interface neither reads ``lrcProtocolVersions`` nor subscribes.
"""

from __future__ import annotations

import threading
import weakref
from concurrent import futures
from typing import Any

import tango

from milonga.lrc.errors import LrcInvocationError, MissingLrcInterfaceError
from milonga.lrc.protocol import V1_ATTRIBUTES, VERSIONS_ATTRIBUTE, attributes_of, negotiate
from milonga.scheduler import (
    CallbackScheduler,
    SchedulerShutDownError,
    UnknownStreamError,
    default_scheduler,
)
from milonga.scheduler.streams import device_trl
from milonga.scheduler.subscriptions import QueueFactory

CHANGE = tango.EventType.CHANGE_EVENT
CONNECT_TIMEOUT_SECONDS = 10.0
"""How long subscribing to a device's LRC attributes may take before giving up."""
LRC_QUEUE_SIZE = 256
"""Events the queue of a device's LRC attributes holds (they are bursty and all count)."""

_lock = threading.Lock()
_connected: weakref.WeakKeyDictionary[CallbackScheduler, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)


def protocol_version(proxy: tango.DeviceProxy) -> int:
    """The protocol version to use with ``proxy``'s device: the newest both sides speak.

    Raises `MissingLrcInterfaceError` if the device has neither ``lrcProtocolVersions``
    nor the v1 attributes, and `LrcInvocationError` if it cannot be read.
    """
    try:
        reading: Any = proxy.read_attribute(VERSIONS_ATTRIBUTE)
    except tango.DevFailed as failure:
        if not (failure.args and failure.args[0].reason == "API_AttrNotFound"):
            raise _unreadable(proxy, VERSIONS_ATTRIBUTE, failure) from failure
        _require_v1_attributes(proxy)
        return 1  # devices from before the attribute speak v1
    advertised = reading.value
    return negotiate(None if advertised is None else list(advertised), proxy.dev_name())


def _require_v1_attributes(proxy: tango.DeviceProxy) -> None:
    """Raise `MissingLrcInterfaceError` unless the device, which lacks
    ``lrcProtocolVersions``, has the attributes of protocol v1."""
    try:
        present = {name.lower() for name in proxy.get_attribute_list()}
    except tango.DevFailed as failure:
        raise _unreadable(proxy, "the attribute list", failure) from failure
    missing = [name for name in V1_ATTRIBUTES if name.lower() not in present]
    if missing:
        raise MissingLrcInterfaceError(
            f"{proxy.dev_name()} lacks the long-running-command interface: it has neither "
            f"{VERSIONS_ATTRIBUTE} (protocol v2) nor {', '.join(missing)} (protocol v1), so "
            "nothing was subscribed or called; check the device name, and invoke long "
            "running commands only on devices that implement them (such as an LrcDevice)"
        )


def _unreadable(
    proxy: tango.DeviceProxy, what: str, failure: tango.DevFailed
) -> LrcInvocationError:
    """The error to raise when ``what`` of the device could not be read."""
    return LrcInvocationError(
        f"cannot read {what} of {proxy.dev_name()}: "
        f"{failure.args[0].desc.strip() if failure.args else failure}; "
        "check that its device server is running"
    )


def connected_version(scheduler: CallbackScheduler, proxy: tango.DeviceProxy) -> int | None:
    """The version `connect_lrc_interface` negotiated for the device, if it is connected."""
    with _lock:
        return _connected.get(scheduler, {}).get(device_trl(proxy))


def queue_factories(
    scheduler: CallbackScheduler, proxy: tango.DeviceProxy, version: int
) -> list[QueueFactory]:
    """Per LRC attribute, the queue factory: a queue of `LRC_QUEUE_SIZE` events, which a v1
    device's three attributes share so that their events keep the device's order."""
    if version >= 2:
        return [lambda: scheduler.allocate_queue(queue_size=LRC_QUEUE_SIZE)]
    first = attributes_of(version)[0]
    return [
        lambda: scheduler.allocate_queue(queue_size=LRC_QUEUE_SIZE),
        lambda: scheduler.get_queue(proxy, first, CHANGE),
        lambda: scheduler.get_queue(proxy, first, CHANGE),
    ]


def connect_lrc_interface(
    proxy: tango.DeviceProxy, scheduler: CallbackScheduler | None = None
) -> None:
    """Keep the device's LRC event streams subscribed until `disconnect_lrc_interface`.

    Returns once they are connected.  `invoke_lrc` with the same scheduler then subscribes
    to nothing.  Uses the default scheduler if ``scheduler`` is None.
    """
    scheduler = default_scheduler() if scheduler is None else scheduler
    version = protocol_version(proxy)
    attributes = attributes_of(version)
    try:
        connections = [
            scheduler.connect_event_stream(proxy, attr, CHANGE, queue_factory=factory)
            for attr, factory in zip(
                attributes, queue_factories(scheduler, proxy, version), strict=True
            )
        ]
    except SchedulerShutDownError as shut_down:
        raise _shut_down(scheduler, proxy) from shut_down
    with _lock:
        _connected.setdefault(scheduler, {})[device_trl(proxy)] = version
    try:
        futures.wait(connections, timeout=CONNECT_TIMEOUT_SECONDS)
        for connection in connections:
            connection.result(timeout=0)
    except futures.TimeoutError as timeout:
        disconnect_lrc_interface(proxy, scheduler)
        raise LrcInvocationError(
            f"the LRC attributes {', '.join(attributes)} of {proxy.dev_name()} did not "
            f"connect within {CONNECT_TIMEOUT_SECONDS:g} s; check that its device server "
            "is running and that they push change events"
        ) from timeout
    except futures.CancelledError as cancelled:
        disconnect_lrc_interface(proxy, scheduler)
        raise _shut_down(scheduler, proxy) from cancelled


def disconnect_lrc_interface(
    proxy: tango.DeviceProxy, scheduler: CallbackScheduler | None = None
) -> None:
    """Undo `connect_lrc_interface`: the streams are unsubscribed once no invocation uses
    them.  Raises `UnknownStreamError` if the interface is not connected; does nothing
    once the scheduler is shut down, which disconnected everything."""
    scheduler = default_scheduler() if scheduler is None else scheduler
    trl = device_trl(proxy)
    with _lock:
        version = _connected.get(scheduler, {}).pop(trl, None)
    if version is None:
        raise UnknownStreamError(
            f"the LRC interface of {trl} is not connected on scheduler {scheduler.name}; "
            "call connect_lrc_interface() with the same scheduler first"
        )
    for attr in attributes_of(version):
        scheduler.disconnect_event_stream(proxy, attr, CHANGE)


def _shut_down(scheduler: CallbackScheduler, proxy: tango.DeviceProxy) -> LrcInvocationError:
    return LrcInvocationError(
        f"the scheduler {scheduler.name} is shut down, so the LRC interface of "
        f"{proxy.dev_name()} was not connected; connect it on a scheduler that is running"
    )
