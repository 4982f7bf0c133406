# mypy: disallow-untyped-decorators=False, disallow-untyped-calls=False
"""Device classes that cause the monitor's findings for real, each driven by its commands.

- `Pusher` publishes change events of ``level`` on demand: ``Push(n)`` pushes ``n`` of
  them at once, each value one more than the one before, so a value is its event's number.
- `Gate` subscribes (stateless) to change events of the ``level`` of device ``Source``.  Its
  callback passes a gate: open, every event passes at once; after ``Hold()``, each waits
  for a token that ``Release(n)`` hands out, or for ``Open()``.  A held callback blocks the
  process's one event-consumer thread, as a slow callback does, for exactly as long as the
  test decides.  Error events (missed events, a source that cannot be reached) pass
  without waiting; ``missed`` counts those that say events were missed.
- `Churner` subscribes callbacks to those events, and unsubscribes them, on demand.
"""

from __future__ import annotations

import threading
from typing import Any

import tango
from tango.server import Device, attribute, command, device_property

LEVEL = "level"
"""The attribute `Pusher` publishes and the others subscribe to."""
MISSED_EVENTS = "API_MissedEvents"
"""The reason of the error event cppTango sends when a subscription's server counter
jumps: events were lost on the way, such as beyond ZeroMQ's high-water mark."""


class Pusher(Device):
    """Holds ``level``, which `Push` raises by one per change event pushed."""

    def init_device(self) -> None:
        super().init_device()
        self._level = 0
        self.set_change_event(LEVEL, True, False)

    @attribute(dtype=int)
    def level(self) -> int:
        return self._level

    @command(dtype_in=int, doc_in="How many change events of level to push, one after another")
    def Push(self, count: int) -> None:
        for _ in range(count):
            self._level += 1
            self.push_change_event(LEVEL, self._level)


class Gate(Device):
    """Receives change events of ``Source``'s ``level`` through a gate its commands open
    and close; see the module's docstring."""

    Source = device_property(dtype=str)

    def init_device(self) -> None:
        super().init_device()
        self._gate = threading.Condition()
        self._open = True
        self._tokens = 0
        self._handled = 0
        self._last_value = 0
        self._missed = 0
        self._source = tango.DeviceProxy(self.Source)
        self._subscription = self._source.subscribe_event(
            LEVEL, tango.EventType.CHANGE_EVENT, self._on_event, stateless=True
        )

    def delete_device(self) -> None:
        self.Open()  # a held callback would keep the consumer thread from unsubscribing
        self._source.unsubscribe_event(self._subscription)

    def _on_event(self, event: tango.EventData) -> None:
        reading: Any = event.attr_value
        if event.err or reading is None:
            with self._gate:
                self._missed += any(error.reason == MISSED_EVENTS for error in event.errors)
            return
        with self._gate:
            self._gate.wait_for(lambda: self._open or self._tokens > 0)
            if not self._open:
                self._tokens -= 1
            self._handled += 1
            self._last_value = int(reading.value)

    @command(doc_in="Make every event wait for a token (Release) or for Open")
    def Hold(self) -> None:
        with self._gate:
            self._open = False

    @command(dtype_in=int, doc_in="Let this many more held events through")
    def Release(self, count: int) -> None:
        with self._gate:
            self._tokens += count
            self._gate.notify_all()

    @command(doc_in="Let every event through at once, held ones included")
    def Open(self) -> None:
        with self._gate:
            self._open = True
            self._tokens = 0
            self._gate.notify_all()

    @attribute(dtype=int, doc="Events whose callback passed the gate")
    def handled(self) -> int:
        return self._handled

    @attribute(dtype=int, doc="The value of the last event that passed the gate")
    def last_value(self) -> int:
        return self._last_value

    @attribute(dtype=int, doc="Error events that said events were missed")
    def missed(self) -> int:
        return self._missed


class Churner(Device):
    """Subscribes callbacks to change events of ``Source``'s ``level``, and unsubscribes
    them, on demand."""

    Source = device_property(dtype=str)

    def init_device(self) -> None:
        super().init_device()
        self._source = tango.DeviceProxy(self.Source)
        self._subscriptions: list[int] = []

    def delete_device(self) -> None:
        while self._subscriptions:
            self.Unsubscribe()

    @command(doc_in="Subscribe one more callback")
    def Subscribe(self) -> None:
        self._subscriptions.append(
            self._source.subscribe_event(LEVEL, tango.EventType.CHANGE_EVENT, self._on_event)
        )

    @command(doc_in="Unsubscribe the callback subscribed last")
    def Unsubscribe(self) -> None:
        if not self._subscriptions:
            raise RuntimeError("no callback is subscribed; call Subscribe first")
        self._source.unsubscribe_event(self._subscriptions.pop())

    @attribute(dtype=int, doc="Callbacks subscribed now")
    def subscriptions(self) -> int:
        return len(self._subscriptions)

    def _on_event(self, event: tango.EventData) -> None:
        """Events are not what this device is about: only its (un)subscribing is."""
