"""`tango-event-monitor` with awkward output: closed, blocked, failing or not UTF-8."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path

import pytest

from milonga.testing import wait_until
from tests.monitor.conftest import COUNTER, RELAY, EventServers
from tests.monitor.test_cli_tango import (
    FAST,
    MONITOR,
    WAIT_SECONDS,
    RunningMonitor,
    environment,
    has,
    perf_is_off,
)

requires_pytango10 = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")
PIPE_BYTES = 4096  # the smallest pipe Linux makes, so that it fills at once


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--poll-period", "1e10"], "expected a number of seconds above 0 and at most 86400"),
        (["-o", ""], "expected a file name, got an empty one"),
    ],
)
def test_absurd_options_are_refused(option: list[str], expected: str) -> None:
    result = subprocess.run(
        [*MONITOR, "test/monitor/counter", *option],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("closing", "expected_stdout", "expected_stderr"),
    [(">&-", None, "error: standard output is closed"), ("2>&-", "", None)],
)
def test_closed_standard_output_or_error_is_status_1(
    closing: str, expected_stdout: str | None, expected_stderr: str | None
) -> None:
    result = subprocess.run(
        ["sh", "-c", f'exec "$@" {closing}', "sh", *MONITOR, "no/such/device"],
        env=environment(None, "127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    if expected_stdout is not None:
        assert result.stdout == expected_stdout  # errors never go to standard output
    if expected_stderr is not None:
        assert expected_stderr in result.stderr
    assert "Traceback" not in result.stderr


@requires_pytango10
def test_characters_the_encoding_lacks_are_escaped(event_servers: EventServers) -> None:
    env = environment(event_servers.sandbox) | {"PYTHONIOENCODING": "ascii"}
    monitor = RunningMonitor([*MONITOR, COUNTER, RELAY, "--monitor", *FAST], env)
    try:
        monitor.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)
        event_servers.increment(5)
        monitor.wait_for("times in \\u03bcs", has("[\\u03bcs]"))
        status, stderr = monitor.interrupt()
    finally:
        monitor.kill()

    assert status == 130
    assert "Traceback" not in stderr


@requires_pytango10
@pytest.mark.parametrize("monitor_option", [[], ["--monitor"]])
def test_a_failing_output_file_is_named_once(
    event_servers: EventServers, monitor_option: list[str]
) -> None:
    result = subprocess.run(
        [*MONITOR, COUNTER, *FAST, "--count", "2", "-o", "/dev/full", *monitor_option],
        env=environment(event_servers.sandbox),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.count("error: cannot write to /dev/full (No space left") == 1
    assert "give another file with -o" in result.stderr
    assert "Traceback" not in result.stderr
    assert perf_is_off(event_servers.sandbox, COUNTER)


@requires_pytango10
@pytest.mark.parametrize(
    ("signum", "expected_status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 143)],
)
def test_signals_stop_the_monitor_while_its_output_is_blocked(
    event_servers: EventServers, signum: signal.Signals, expected_status: int
) -> None:
    """Like `| less` waiting at a page: nobody reads the full pipe the monitor writes to."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    process = subprocess.Popen(
        [*MONITOR, COUNTER, "--monitor", "--poll-period", "0.05"],
        env=environment(event_servers.sandbox),
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    try:
        wait_until(lambda: _blocked_writing_to_a_pipe(process.pid), "the pipe to fill")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
        process.communicate()
        os.close(read_end)

    assert process.returncode == expected_status
    assert "Traceback" not in stderr
    assert perf_is_off(event_servers.sandbox, COUNTER)


def _blocked_writing_to_a_pipe(pid: int) -> bool:
    """Whether the main thread of ``pid`` waits in the kernel for room in a pipe."""
    return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
