"""A publishing server restarting under a CallbackScheduler's subscription."""

from __future__ import annotations

import threading
from typing import Any

import tango

from milonga import CallbackScheduler
from milonga.testing import SandboxServers

CHANGE = tango.EventType.CHANGE_EVENT
COUNTER = "tests.devices.counter"
# Tango notices a lost server by its missing heartbeat and resubscribes on a 10 s cadence.
RESUBSCRIBE_SECONDS = 90.0


class Timeline:
    """Each event a callback received, as ``"error"`` or the value it carried."""

    def __init__(self) -> None:
        self.entries: list[int | str] = []
        self._changed = threading.Condition()

    def __call__(self, event: tango.EventData) -> None:
        reading: Any = event.attr_value
        with self._changed:
            self.entries.append("error" if event.err or reading is None else reading.value)
            self._changed.notify_all()

    def wait_for(self, expected_tail: list[int | str]) -> None:
        with self._changed:
            assert self._changed.wait_for(
                lambda: self._has_tail(expected_tail), RESUBSCRIBE_SECONDS
            ), f"expected the events to end with {expected_tail}, got {self.entries}"

    def _has_tail(self, tail: list[int | str]) -> bool:
        squeezed = [e for i, e in enumerate(self.entries) if i == 0 or e != self.entries[i - 1]]
        return squeezed[-len(tail) :] == tail


def test_callbacks_see_the_outage_then_events_again(sandbox_servers: SandboxServers) -> None:
    trl = sandbox_servers.add_device("Sched/restart", "Counter", "test/restart/1", {"Start": 3})
    sandbox_servers.start("Sched/restart", COUNTER)
    timeline, late = Timeline(), Timeline()

    with CallbackScheduler(name="restart-test") as scheduler:
        scheduler.register_event_callback(trl, "value", CHANGE, timeline).result(
            RESUBSCRIBE_SECONDS
        )
        tango.DeviceProxy(trl).Increment()
        timeline.wait_for([3, 4])

        sandbox_servers.sandbox.stop_server("Sched/restart")
        timeline.wait_for([4, "error"])  # Tango's error event for the silent server
        scheduler.register_event_callback(trl, "value", CHANGE, late)
        late.wait_for(["error"])  # the stream's latest news, not the stale value 4
        sandbox_servers.start("Sched/restart", COUNTER)
        timeline.wait_for([4, "error", 3])  # resubscribed: the fresh value
        tango.DeviceProxy(trl).Increment()

        timeline.wait_for([4, "error", 3, 4])
        late.wait_for(["error", 3, 4])
