"""A publisher and a subscriber server shared by the monitor's sandbox tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import tango

from milonga.sandbox import TangoSandbox
from milonga.testing import wait_until

PUBLISHER = "MonitorPub/1"
SUBSCRIBER = "MonitorSub/1"
COUNTER = "test/monitor/counter"
SPARE = "test/monitor/spare"
RELAY = "test/monitor/relay"


@dataclass
class EventServers:
    """A Counter server (two devices) publishing to a Relay server subscribing to COUNTER."""

    sandbox: TangoSandbox

    def increment(self, times: int) -> None:
        """Push ``times`` change events and wait until the relay has received them all."""
        counter, relay = self.sandbox.proxy(COUNTER), self.sandbox.proxy(RELAY)
        expected = relay.received + times
        for _ in range(times):
            counter.Increment()
        wait_until(lambda: relay.received >= expected, f"the relay to receive {times} events")

    def admin(self, server: str) -> tango.DeviceProxy:
        return self.sandbox.proxy(f"dserver/{server}")


@pytest.fixture(scope="package")
def event_servers(tango_sandbox: TangoSandbox) -> Iterator[EventServers]:
    tango_sandbox.add_device(PUBLISHER, "Counter", COUNTER)
    tango_sandbox.add_device(PUBLISHER, "Counter", SPARE)
    tango_sandbox.add_device(SUBSCRIBER, "Relay", RELAY, {"Source": tango_sandbox.trl(COUNTER)})
    try:
        # The publisher first: a relay up before it would wait 10 s to connect.
        tango_sandbox.start_server(PUBLISHER, "tests/devices/counter.py")
        tango_sandbox.start_server(SUBSCRIBER, "tests/devices/relay.py")
        servers = EventServers(tango_sandbox)
        wait_until(lambda: tango_sandbox.proxy(RELAY).received >= 1, "the relay's first event")
        yield servers
    finally:
        tango_sandbox.delete_server(SUBSCRIBER)
        tango_sandbox.delete_server(PUBLISHER)
