"""The process-wide default scheduler."""

from __future__ import annotations

import threading
from typing import Any

import tango

from milonga import default_scheduler, shutdown_default_scheduler
from milonga.testing import SandboxServers
from tests.scheduler.helpers import WAIT_SECONDS


def test_default_scheduler_is_shared_and_replaced_after_shutdown() -> None:
    first = default_scheduler()
    assert default_scheduler() is first

    shutdown_default_scheduler()

    assert first.is_shut_down
    second = default_scheduler()
    assert second is not first
    second.shutdown()
    assert default_scheduler() is not second
    shutdown_default_scheduler()
    shutdown_default_scheduler()  # idempotent
    assert not [t for t in threading.enumerate() if t.name.startswith("milonga-default")]


def test_default_scheduler_delivers_events(sandbox_servers: SandboxServers) -> None:
    trl = sandbox_servers.add_device("Sched/default", "Counter", "test/default/1", {"Start": 7})
    sandbox_servers.start("Sched/default", "tests.devices.counter")
    received = threading.Event()
    values: list[int] = []

    def record(event: tango.EventData) -> None:
        reading: Any = event.attr_value
        if reading is not None:
            values.append(reading.value)
            received.set()

    try:
        default_scheduler().register_event_callback(
            trl, "value", tango.EventType.CHANGE_EVENT, record
        ).result(WAIT_SECONDS)
        assert received.wait(WAIT_SECONDS)
        assert values == [7]
    finally:
        shutdown_default_scheduler()
