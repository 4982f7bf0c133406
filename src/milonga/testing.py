"""pytest fixtures on top of `TangoSandbox`.

Enable them with ``pytest_plugins = ["milonga.testing"]`` in a root ``conftest.py``:

- ``tango_sandbox``: one sandbox shared by the whole test session;
- ``sandbox_servers``: define and start servers in that sandbox for one test only. Every
  server a test defines through it is stopped and deleted from the database afterwards,
  so the next test can reuse the names;
- ``event_system_change``: what one test changed in this process's Tango event system.

`wait_until` polls for what no event or callback reports, such as a server's log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from milonga.monitor import Report, Snapshot, diff, query_process, render_report
from milonga.sandbox import TangoSandbox

WAIT_SECONDS = 20.0
WAIT_POLL_SECONDS = 0.02


def wait_until(
    condition: Callable[[], bool], what: str = "the condition", timeout: float = WAIT_SECONDS
) -> None:
    """Return once ``condition()`` holds; fail the test, naming ``what``, if it does not
    within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(WAIT_POLL_SECONDS)


class SandboxServers:
    """The servers one test defines in the shared sandbox; `cleanup` removes them all."""

    def __init__(self, sandbox: TangoSandbox) -> None:
        self.sandbox = sandbox
        self._defined: list[str] = []

    def add_device(
        self,
        server: str,
        device_class: str,
        name: str,
        properties: Mapping[str, Any] | None = None,
    ) -> str:
        """Define a device (see `TangoSandbox.add_device`) and return its full TRL."""
        self.sandbox.add_device(server, device_class, name, properties)
        if server not in self._defined:
            self._defined.append(server)
        return self.sandbox.trl(name)

    def start(self, server: str, source: str | os.PathLike[str]) -> None:
        """Start a server whose devices this test defined (see `TangoSandbox.start_server`)."""
        self.sandbox.start_server(server, source)

    def cleanup(self) -> None:
        """Stop and forget every server this test defined, last defined first."""
        for server in reversed(self._defined):
            self.sandbox.delete_server(server)
        self._defined.clear()


@pytest.fixture(scope="session")
def tango_sandbox() -> Iterator[TangoSandbox]:
    """A running sandbox shared by every test of the session."""
    with TangoSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_servers(tango_sandbox: TangoSandbox) -> Iterator[SandboxServers]:
    """Servers for this test only, in the session's sandbox."""
    servers = SandboxServers(tango_sandbox)
    try:
        yield servers
    finally:
        servers.cleanup()


class EventSystemChange:
    """This process's event system when the test started, and what has changed since.

    Every method queries the process again and compares with `before`, the snapshot
    taken when the fixture was set up.  A query empties the process's performance
    samples, so a report's tables cover the time since the previous query.
    """

    def __init__(self) -> None:
        self.before: Snapshot = query_process()

    def snapshot(self) -> Snapshot:
        """The process's event system now."""
        return query_process()

    def report(self) -> Report:
        """What changed since the test started: subscriptions, counters, samples."""
        return diff(self.before, query_process())

    def render(self) -> str:
        """`report` as text, in the layout the monitor prints."""
        return "\n".join(render_report(self.report()))


@pytest.fixture
def event_system_change() -> EventSystemChange:
    """What this test changes in its own process's event system (needs PyTango 10)."""
    return EventSystemChange()
