"""A device whose scheduler callback pushes events on it, to test shutdown in delete_device.

`Forwarder` subscribes, through its own `CallbackScheduler`, to the `value` attribute of
the `Source` device and pushes each value as its own `mirror` attribute.  A value above
the first one makes the callback wait for ``delete_device`` to begin, then wait
`HoldSeconds` more before pushing, so that the push needs the monitor while
``delete_device`` holds it.  ``delete_device`` shuts the scheduler down, inside
`allow_internal_threads` if `AllowInternalThreads` is set.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, ClassVar

import tango
from tango.server import Device, attribute, device_property

from milonga import CallbackScheduler, allow_internal_threads

WAIT_SECONDS = 30.0


class Forwarder(Device):
    """Mirrors `Source`'s value; records what happened to pushes and reads across Init."""

    Source = device_property(dtype=str)
    AllowInternalThreads = device_property(dtype=bool, default_value=False)
    HoldSeconds = device_property(dtype=float, default_value=1.0)

    # Class attributes, so that they survive Init, which recreates the device's state.
    push_outcomes: ClassVar[list[str]] = []
    reads_while_deleting: ClassVar[int] = 0
    callbacks_started: ClassVar[int] = 0

    def init_device(self) -> None:
        super().init_device()
        self._mirror = 0
        self._first_value: int | None = None
        self._deleting = threading.Event()
        self.set_change_event("mirror", True, False)
        self._scheduler = CallbackScheduler(name="forwarder")
        self._scheduler.register_event_callback(
            self.Source, "value", tango.EventType.CHANGE_EVENT, self._forward
        )

    def delete_device(self) -> None:
        print("delete_device: shutting the scheduler down", flush=True)
        self._deleting.set()
        guard = allow_internal_threads(self) if self.AllowInternalThreads else None
        with guard or contextlib.nullcontext():
            self._scheduler.shutdown()
        self._deleting.clear()
        print("delete_device: done", flush=True)

    def _forward(self, event: tango.EventData) -> None:
        reading: Any = event.attr_value
        if event.err or reading is None:
            return
        Forwarder.callbacks_started += 1
        value = int(reading.value)
        if self._first_value is None:
            self._first_value = value
        elif value > self._first_value:
            self._deleting.wait(WAIT_SECONDS)
            time.sleep(self.HoldSeconds)  # the scenario: a callback still busy after that
        self._mirror = value
        try:
            self.push_change_event("mirror", value)
            Forwarder.push_outcomes.append("pushed")
        except tango.DevFailed as failure:
            Forwarder.push_outcomes.append(failure.args[0].reason)

    @attribute(dtype=int)
    def mirror(self) -> int:
        if self._deleting.is_set():
            Forwarder.reads_while_deleting += 1
        return self._mirror

    @attribute(dtype=(str,), max_dim_x=100)
    def outcomes(self) -> list[str]:
        return Forwarder.push_outcomes

    @attribute(dtype=int)
    def started(self) -> int:
        return Forwarder.callbacks_started

    @attribute(dtype=int)
    def intruders(self) -> int:
        return Forwarder.reads_while_deleting
