"""An asyncio device server (`tests.devices.async_relay`) in the sandbox: it pushes change
events of its own from its coroutine commands, and from the coroutine callbacks of its
`AsyncCallbackScheduler` subscription to another device."""

from __future__ import annotations

import pytest
import tango

from milonga.testing import SandboxServers, TangoEvents

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
def relayed(relay: tango.DeviceProxy, tango_events: TangoEvents) -> TangoEvents:
    """A plain client's recorder of the change events of ``relayed``, subscribed."""
    tango_events.subscribe(relay, "relayed")
    return tango_events


def received(relayed: TangoEvents, relay: tango.DeviceProxy) -> list[tuple[object, str | None]]:
    """The value and error of each event of ``relayed`` recorded so far."""
    return [(event.value, event.error) for event in relayed.events(relay, "relayed")]


def test_a_value_pushed_from_a_coroutine_command_reaches_a_plain_subscriber(
    relay: tango.DeviceProxy, relayed: TangoEvents
) -> None:
    relayed.assert_event(relay, "relayed", value=0)  # the current value, read on subscribing
    relay.Push(42)
    relayed.assert_event(relay, "relayed", value=42)
    relay.Push(-7)
    relayed.assert_event(relay, "relayed", value=-7)
    assert received(relayed, relay) == [(0, None), (42, None), (-7, None)]
    assert relay.relay_count == 2


def test_a_followed_device_s_events_are_pushed_again_from_the_servers_loop(
    sandbox_servers: SandboxServers, relay: tango.DeviceProxy, relayed: TangoEvents, counter: str
) -> None:
    relayed.assert_event(relay, "relayed", value=0)
    relay.Follow(f"{counter}/value")
    relayed.assert_event(relay, "relayed", value=5)  # the counter's value, relayed on subscribing
    source = tango.DeviceProxy(counter)
    for _ in range(3):
        source.Increment()
    relayed.assert_event(relay, "relayed", value=8)

    assert received(relayed, relay) == [(0, None), (5, None), (6, None), (7, None), (8, None)]
    sandbox_servers.sandbox.stop_server(RELAY_SERVER)  # delete_device closes the scheduler
    log = sandbox_servers.sandbox.server_output(RELAY_SERVER)
    assert f"{RELAY_DEVICE}: scheduler closed" in log
    assert "Traceback" not in log
    assert "aclose" not in log  # no warning of a scheduler left open
