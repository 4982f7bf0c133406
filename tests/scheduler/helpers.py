"""What the scheduler's Tango tests share: a recording callback, cppTango's own count of
this process's subscriptions, and a spy on an event loop's wake-ups from other threads."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import tango

COUNTER = "tests.devices.counter"
CHANGE = tango.EventType.CHANGE_EVENT
ARCHIVE = tango.EventType.ARCHIVE_EVENT
WAIT_SECONDS = 60.0
"""A safety net: how long a test waits for what should happen before it fails."""


class Recorder:
    """A callback that keeps every event and the thread it ran on."""

    def __init__(self) -> None:
        self.events: list[tango.EventData] = []
        self.threads: set[str] = set()
        self._changed = threading.Condition()

    def __call__(self, event: tango.EventData) -> None:
        with self._changed:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    @property
    def values(self) -> list[int]:
        readings: list[Any] = [e.attr_value for e in self.events if not e.err]
        return [reading.value for reading in readings if reading is not None]

    @property
    def errors(self) -> list[str]:
        """The reason of the last error in each error event's stack."""
        return [e.errors[-1].reason for e in self.events if e.err]

    def wait_for_last(self, value: int) -> None:
        self.wait_for(lambda r: r.values[-1:] == [value])

    def wait_for(self, condition: Callable[[Recorder], bool]) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), WAIT_SECONDS), (
                f"condition not met; values so far: {self.values}, errors: {self.errors}"
            )


def client_topics() -> dict[str, dict[str, Any]]:
    """This process's event subscriptions as cppTango counts them, by device/attr.event."""
    client = json.loads(tango.ApiUtil.instance().query_event_system())["client"] or {}
    return {
        topic.split("/", 3)[-1]: entry for topic, entry in client.get("event_callbacks", {}).items()
    }


def client_callbacks() -> dict[str, int]:
    """How many callbacks cppTango has for each topic of this process, by device/attr.event."""
    return {topic: entry["callback_count"] for topic, entry in client_topics().items()}


def client_pending() -> list[str]:
    """The subscriptions cppTango has not finished making in this process, as
    device/attr, in lower case."""
    client = json.loads(tango.ApiUtil.instance().query_event_system())["client"] or {}
    return [
        f"{entry['device']}/{entry['attribute']}".lower()
        for entry in client.get("not_connected", [])
    ]


class CallSpy:
    """Stands in for ``loop.call_soon_threadsafe`` on one loop instance while its ``with``
    block runs: keeps what each call schedules, from any thread, and forwards the call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.calls: list[Callable[..., object]] = []
        self._loop = loop
        self._forward = loop.call_soon_threadsafe

    def __call__(self, callback: Callable[..., object], *args: object, **kwargs: Any) -> Any:
        self.calls.append(callback)
        return self._forward(callback, *args, **kwargs)

    def __enter__(self) -> CallSpy:
        self._loop.call_soon_threadsafe = self  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        del self._loop.call_soon_threadsafe
