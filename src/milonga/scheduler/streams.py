"""Event streams: what identifies one, and the events milonga makes up for it."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass

import tango

DEFAULT_TANGO_HOST_PORT = 10000
TRL_SCHEME = "tango://"


@dataclass(frozen=True)
class StreamKey:
    """One Tango event stream: a device (as a full TRL), an attribute and an event type."""

    device_trl: str
    attr_name: str
    event_type: tango.EventType

    def __str__(self) -> str:
        kind = self.event_type.name.removesuffix("_EVENT").lower()
        return f"{self.device_trl.split('/', 3)[-1]}/{self.attr_name}.{kind}"

    @property
    def attr_trl(self) -> str:
        return f"{self.device_trl}/{self.attr_name}"


def device_trl(device: tango.DeviceProxy | str) -> str:
    """The full, lower-case ``tango://address:port/domain/family/member`` of ``device``.

    A bare name is resolved against ``TANGO_HOST``, as `tango.DeviceProxy` would.  The
    database host becomes its IP address, so every spelling of one host names one stream.
    """
    if isinstance(device, tango.DeviceProxy):
        return _trl(device.get_db_host(), str(device.get_db_port()), device.dev_name())
    name = device.strip()
    if name.lower().startswith(TRL_SCHEME):
        host_port, _, device_name = name[len(TRL_SCHEME) :].partition("/")
        host, _, port = host_port.rpartition(":")
        if not host or not port or device_name.count("/") != 2:
            raise ValueError(
                f"device {device!r} is not a valid TRL; expected "
                "'tango://host:port/domain/family/member'"
            )
        return _trl(host, port, device_name)
    if name.count("/") != 2:
        raise ValueError(
            f"device {device!r} is not a device name; expected 'domain/family/member' "
            "or 'tango://host:port/domain/family/member'"
        )
    tango_host = os.environ.get("TANGO_HOST", "").split(",")[0]
    if not tango_host:
        raise ValueError(
            f"cannot tell which Tango database device {device!r} is in: TANGO_HOST is not "
            "set; set it or pass a full 'tango://host:port/domain/family/member'"
        )
    host, _, port = tango_host.partition(":")
    return _trl(host, port or str(DEFAULT_TANGO_HOST_PORT), name)


def _trl(host: str, port: str, device_name: str) -> str:
    return f"{TRL_SCHEME}{_address(host)}:{port}/{device_name}".lower()


@functools.lru_cache(maxsize=256)
def _address(host: str) -> str:
    """``host``'s IP address, or ``host`` itself if it cannot be resolved."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def stream_key(
    device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
) -> StreamKey:
    """The key of the stream of ``event_type`` events of ``device``'s ``attr_name``."""
    return StreamKey(device_trl(device), attr_name.lower(), event_type)


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
