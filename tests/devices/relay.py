"""A subscriber device for event-monitor tests: it relays another device's change events.

`Relay` subscribes, with plain PyTango, to change events of the `Attribute` attribute of
the `Source` device, counts what it receives in `received` and pushes each value again as
its own `value` attribute.  `CallbackSeconds` makes each callback that much slower.  The
subscription is stateless, so the source's server may start after the relay's.
"""

from __future__ import annotations

import time
from typing import Any

import tango
from tango.server import Device, attribute, device_property


class Relay(Device):
    """Counts and relays the change events of `Source`/`Attribute`."""

    Source = device_property(dtype=str)
    Attribute = device_property(dtype=str, default_value="value")
    CallbackSeconds = device_property(dtype=float, default_value=0.0)

    def init_device(self) -> None:
        super().init_device()
        self._value = 0
        self._received = 0
        self.set_change_event("value", True, False)
        self._source = tango.DeviceProxy(self.Source)
        self._subscription = self._source.subscribe_event(
            self.Attribute, tango.EventType.CHANGE_EVENT, self._on_event, stateless=True
        )

    def delete_device(self) -> None:
        self._source.unsubscribe_event(self._subscription)

    def _on_event(self, event: tango.EventData) -> None:
        reading: Any = event.attr_value
        if event.err or reading is None:
            return
        if self.CallbackSeconds > 0:
            time.sleep(self.CallbackSeconds)  # the slow callback under study
        self._received += 1
        self._value = int(reading.value)
        self.push_change_event("value", self._value)

    @attribute(dtype=int)
    def value(self) -> int:
        return self._value

    @attribute(dtype=int)
    def received(self) -> int:
        return self._received
