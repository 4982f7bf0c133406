"""An asyncio device server (`tests.devices.async_relay`) in the sandbox: it pushes change
events of its own from its coroutine commands, and from the coroutine callbacks of its
`AsyncCallbackScheduler` subscription to another device."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tango

from milonga.testing import SandboxServers
from tests.scheduler.helpers import CHANGE, Recorder

ASYNC_RELAY = "tests.devices.async_relay"
RELAY_SERVER = "AsyncRelay/1"
RELAY_DEVICE = "test/asyncrelay/1"


@pytest.fixture
def relay(sandbox_servers: SandboxServers) -> tango.DeviceProxy:
    """A plain (synchronous) proxy to a running AsyncRelay."""
    sandbox_servers.add_device(RELAY_SERVER, "AsyncRelay", RELAY_DEVICE)
    sandbox_servers.start(RELAY_SERVER, ASYNC_RELAY)
    return sandbox_servers.sandbox.proxy(RELAY_DEVICE)


@pytest.fixture
def relayed(relay: tango.DeviceProxy) -> Iterator[Recorder]:
    """A plain client's change-event subscription to ``relayed``, current value received."""
    recorder = Recorder()
    event_id = relay.subscribe_event("relayed", CHANGE, recorder)
    try:
        yield recorder
    finally:
        relay.unsubscribe_event(event_id)


def test_a_value_pushed_from_a_coroutine_command_reaches_a_plain_subscriber(
    relay: tango.DeviceProxy, relayed: Recorder
) -> None:
    relayed.wait_for_last(0)  # the current value, read on subscribing
    relay.Push(42)
    relayed.wait_for_last(42)
    relay.Push(-7)
    relayed.wait_for_last(-7)
    assert relayed.values == [0, 42, -7]
    assert relayed.errors == []
    assert relay.relay_count == 2


def test_a_followed_device_s_events_are_pushed_again_from_the_servers_loop(
    sandbox_servers: SandboxServers, relay: tango.DeviceProxy, relayed: Recorder, counter: str
) -> None:
    relayed.wait_for_last(0)
    relay.Follow(f"{counter}/value")
    relayed.wait_for_last(5)  # the counter's current value, relayed on subscribing
    source = tango.DeviceProxy(counter)
    for _ in range(3):
        source.Increment()
    relayed.wait_for_last(8)

    assert relayed.values == [0, 5, 6, 7, 8]
    assert relayed.errors == []
    sandbox_servers.sandbox.stop_server(RELAY_SERVER)  # delete_device closes the scheduler
    log = sandbox_servers.sandbox.server_output(RELAY_SERVER)
    assert f"{RELAY_DEVICE}: scheduler closed" in log
    assert "Traceback" not in log
    assert "aclose" not in log  # no warning of a scheduler left open
