"""Shutting a scheduler down in delete_device while a callback pushes on the same device."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import tango

from milonga import allow_internal_threads
from milonga.testing import SandboxServers, wait_until

FORWARDER = "tests.devices.forwarder"
COUNTER = "tests.devices.counter"
WAIT_SECONDS = 60.0
TANGO_MONITOR_TIMEOUT_SECONDS = 3.2
DELETE_STARTED = "delete_device: shutting the scheduler down"
# How long the forwarder's callback stays busy once delete_device has begun.  The outside
# read of the second test must be sent within it, and then waits for the device's monitor
# for about as long, which must stay under Tango's monitor timeout: 2 s leaves both sides
# a wide margin.
HOLD_SECONDS = 2.0


def _start_forwarder(servers: SandboxServers, name: str, *, allow: bool) -> tango.DeviceProxy:
    source = servers.add_device(f"FwdSource/{name}", "Counter", f"test/fwdsrc/{name}", {"Start": 1})
    servers.start(f"FwdSource/{name}", COUNTER)
    servers.add_device(
        f"Forwarder/{name}",
        "Forwarder",
        f"test/fwd/{name}",
        {"Source": source, "AllowInternalThreads": allow, "HoldSeconds": HOLD_SECONDS},
    )
    servers.start(f"Forwarder/{name}", FORWARDER)
    forwarder = tango.DeviceProxy(servers.sandbox.trl(f"test/fwd/{name}"))
    wait_until(lambda: list(forwarder.outcomes or []) == ["pushed"], timeout=WAIT_SECONDS)
    tango.DeviceProxy(source).Increment()  # this callback will push during delete_device
    wait_until(lambda: forwarder.started == 2, timeout=WAIT_SECONDS)
    return forwarder


def _client(servers: SandboxServers, name: str) -> tango.DeviceProxy:
    proxy = tango.DeviceProxy(servers.sandbox.trl(f"test/fwd/{name}"))
    proxy.set_timeout_millis(int(WAIT_SECONDS * 1000))
    return proxy


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    """Run ``call``; return when it started and when it finished."""
    started = time.monotonic()
    call()
    return started, time.monotonic()


def test_without_it_a_pushing_callback_stalls_delete_device_and_loses_the_event(
    sandbox_servers: SandboxServers,
) -> None:
    forwarder = _start_forwarder(sandbox_servers, "plain", allow=False)

    started, finished = _timed(_client(sandbox_servers, "plain").Init)

    # The worker waits for the monitor that delete_device holds while it waits for the
    # worker: only Tango's monitor timeout ends it, by failing the push.
    assert list(forwarder.outcomes)[-1] == "API_CommandTimedOut"
    assert finished - started >= TANGO_MONITOR_TIMEOUT_SECONDS


def test_with_it_the_callback_pushes_and_no_outside_request_gets_in(
    sandbox_servers: SandboxServers,
) -> None:
    forwarder = _start_forwarder(sandbox_servers, "allowed", allow=True)
    outside = _client(sandbox_servers, "allowed")

    with ThreadPoolExecutor(1) as pool:
        init = pool.submit(_timed, _client(sandbox_servers, "allowed").Init)
        wait_until(
            lambda: DELETE_STARTED in sandbox_servers.sandbox.server_output("Forwarder/allowed"),
            timeout=WAIT_SECONDS,
        )
        read_issued, _ = _timed(lambda: outside.read_attribute("mirror"))
        _, init_finished = init.result(WAIT_SECONDS)

    assert list(forwarder.outcomes)[-1] == "pushed"
    assert read_issued < init_finished, "the outside read must overlap delete_device"
    assert forwarder.intruders == 0, "a client read ran while delete_device was running"


def test_it_refuses_what_is_not_a_device() -> None:
    with (
        pytest.raises(TypeError, match="needs the Tango device"),
        allow_internal_threads("foo/bar/1"),  # type: ignore[arg-type]
    ):
        pass
