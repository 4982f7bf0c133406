"""The LRC test devices, started once for the whole tests/lrc package, and a recorder of
the updates an ``lrc_callback`` receives."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tango

from milonga.lrc import TaskStatus
from milonga.lrc.protocol import V1_ATTRIBUTES
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers

WAIT_SECONDS = 15.0
V2_DEVICE = "test/lrc/v2"
V2_SERVER = "LrcTester/1"
V1_DEVICE = "test/lrc/v1"


@pytest.fixture(scope="package")
def lrc_devices(tango_sandbox: TangoSandbox) -> Iterator[dict[str, tango.DeviceProxy]]:
    """Proxies of the v2 and the v1 test device, by protocol version."""
    servers = SandboxServers(tango_sandbox)
    try:
        servers.add_device(V2_SERVER, "LrcTester", V2_DEVICE)
        servers.add_device("LrcV1Tester/1", "LrcV1Tester", V1_DEVICE)
        tango_sandbox.start_servers(
            {V2_SERVER: "tests.devices.lrc_device", "LrcV1Tester/1": "tests.devices.lrc_v1"}
        )
        yield {"v2": tango_sandbox.proxy(V2_DEVICE), "v1": tango_sandbox.proxy(V1_DEVICE)}
    finally:
        servers.cleanup()


@pytest.fixture
def lrc_anchor(lrc_devices: dict[str, tango.DeviceProxy]) -> Iterator[None]:
    """Hold a raw subscription to every LRC attribute of the test devices for one test.

    A new subscription can lose an event pushed in its first milliseconds, with no error
    event (docs/scheduler.md, "What a new subscription can miss"): an invocation would
    then miss updates, and learn how its command ended only from the device's records a
    second later.  With the process subscribed throughout, the tests that check every
    update are not exposed to that.
    """
    held = [
        (proxy, proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, lambda _: None))
        for proxy, attributes in (
            (lrc_devices["v2"], ("_lrcEvent",)),
            (lrc_devices["v1"], V1_ATTRIBUTES),
        )
        for attr in attributes
    ]
    yield
    for proxy, subscription in held:
        proxy.unsubscribe_event(subscription)


class Updates:
    """An ``lrc_callback`` that keeps every call's keyword arguments and its thread."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.threads: set[str] = set()
        self._changed = threading.Condition()

    def __call__(self, **kwargs: Any) -> None:
        with self._changed:
            self.calls.append(kwargs)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def values(self, key: str) -> list[Any]:
        with self._changed:
            return [call[key] for call in self.calls if key in call]

    def wait_for(self, condition: Callable[[Updates], bool], what: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), WAIT_SECONDS), (
                f"gave up waiting for {what}; updates so far: {self.calls}"
            )

    def wait_for_status(self, status: TaskStatus) -> None:
        self.wait_for(lambda u: status in u.values("status"), f"status {status.name}")
