"""Device servers stopped with SIGSTOP, as a frozen or swapped-out process would be.

Tests freeze servers of their own (`start_ice`), never the shared publisher: a subscriber
that misses its publisher's heartbeats takes many seconds to receive events again.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import tango

from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers, wait_until


def start_ice(servers: SandboxServers, number: int = 1) -> tuple[str, str]:
    """Start a Counter server that nothing subscribes to, for one test to freeze; return
    its server name and its device name."""
    server, device = f"MonitorIce/{number}", f"test/monitor/ice{number}"
    servers.add_device(server, "Counter", device)
    servers.start(server, "tests/devices/counter.py")
    return server, device


@contextlib.contextmanager
def frozen(sandbox: TangoSandbox, server: str) -> Iterator[Callable[[], None]]:
    """``server`` of ``sandbox`` stopped with SIGSTOP inside the block, so that its admin
    device answers nothing; yields a function that resumes it early.

    The block starts once every thread of the server has stopped: `os.kill` returns
    before, and a thread still running could answer a call sent meanwhile.  On leaving,
    the server is resumed and answers again.
    """
    pid = sandbox.database().get_device_info(f"dserver/{server}").pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: set(thread_states(pid)) == {"T"},
            f"every thread of {server} to stop after SIGSTOP",
        )
        yield lambda: os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: _answers(sandbox, server), f"{server} to answer after SIGCONT")


def thread_states(pid: int) -> list[str]:
    """The state of every thread of process ``pid``, as /proc gives it: one letter each,
    T for stopped."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread has just ended
            continue
        # The state follows the command name, in parentheses that may hold any character.
        states.append(stat[stat.rindex(")") + 2])
    return states


def _answers(sandbox: TangoSandbox, server: str) -> bool:
    try:
        sandbox.proxy(f"dserver/{server}").ping()  # a new proxy: no reconnection delay
    except tango.DevFailed:
        return False
    return True
