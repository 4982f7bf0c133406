"""`EventSystemHealth` against real servers: what it leaves behind when a server does not
answer at the end of a test."""

from __future__ import annotations

import pytest

from milonga.monitor.collector import query_server
from milonga.testing import SandboxServers
from milonga.testing.health import EventSystemHealth
from tests.monitor.frozen import frozen, start_ice

pytestmark = pytest.mark.requires_pytango10("the health check needs PyTango 10.3")

FROZEN_TIMEOUT = 3.0
"""How long a poll waits for an answer: the frozen server never answers, so this bounds
the test's length, and a server that runs answers in milliseconds, far within it."""


def test_sampling_a_frozen_server_kept_on_is_switched_off_once_it_answers(
    sandbox_servers: SandboxServers,
) -> None:
    sandbox = sandbox_servers.sandbox
    server, device = start_ice(sandbox_servers, number=17)
    trl = sandbox.trl(device)
    health = EventSystemHealth([trl], timeout=FROZEN_TIMEOUT)
    try:
        baseline = health.begin()
        assert query_server(trl).perf_monitoring is True
        with frozen(sandbox, server):
            checkup = health.end(baseline)
        assert f"sampling is still on in {sandbox.trl(f'dserver/{server}')}" in checkup.render()
    finally:
        health.close()
    assert query_server(trl).perf_monitoring is False
