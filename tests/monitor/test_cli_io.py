"""`tango-event-monitor` with awkward output: closed, blocked, failing or not UTF-8."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from milonga.testing import wait_until
from tests.monitor.conftest import COUNTER, PUBLISHER, RELAY, EventServers
from tests.monitor.test_cli_tango import (
    FAST,
    MONITOR,
    WAIT_SECONDS,
    RunningMonitor,
    environment,
    has,
    perf_is_off,
    split_snapshots,
)

requires_pytango10 = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")
PIPE_BYTES = 4096  # the smallest pipe Linux makes, so that it fills at once
# `python -c WITH... LIMIT COMMAND...` runs COMMAND with files limited to LIMIT bytes;
# Python ignores SIGXFSZ, so writes beyond the limit fail with EFBIG.
WITH_FILE_SIZE_LIMIT = [
    sys.executable,
    "-c",
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "os.execv(sys.argv[2], sys.argv[2:])",
]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--poll-period", "1e10"], "expected a number of seconds from 0.1 to 86400"),
        (["--poll-period", "1e-9"], "expected a number of seconds from 0.1 to 86400"),
        (["--poll-period", "nan"], "expected a number of seconds from 0.1 to 86400"),
        (["-o", ""], "expected a file name, got an empty one"),
        (["--fail-on", "error"], "--fail-on sets the exit status when the monitor stops by"),
        (["--fail-on", "info", "--count", "1"], "invalid choice: 'info'"),
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
        # Every table row has a ±; whether a row is in μs depends on the machine's speed.
        monitor.wait_for("a table with its \\xb1 escaped", has("\\xb1"))
        status, stderr = monitor.interrupt()
    finally:
        monitor.kill()

    assert status == 130
    assert "Traceback" not in stderr
    assert not has("±")(monitor.snapshots())


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
    assert split_snapshots(result.stdout.splitlines()), "the snapshot the file missed is shown"
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
        [*MONITOR, COUNTER, "--monitor", "--poll-period", "0.1"],
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


@requires_pytango10
def test_a_device_name_that_is_not_utf8_gets_one_line(event_servers: EventServers) -> None:
    """Like ``tango-event-monitor $'dev/x/\\xff'`` in bash."""
    result = subprocess.run(
        [*(os.fsencode(part) for part in MONITOR), COUNTER.encode(), b"dev/x/\xff"],
        env=environment(event_servers.sandbox),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == (
        "tango-event-monitor: error: 'dev/x/\\xff' is not a device name: it holds bytes that "
        "are not UTF-8 text; check the name, which Tango spells in ASCII"
    )


@requires_pytango10
def test_output_to_dash_is_json_lines_on_standard_output(
    event_servers: EventServers, tmp_path: Path
) -> None:
    result = subprocess.run(
        [*MONITOR, COUNTER, *FAST, "--count", "2", "-o", "-"],
        env=environment(event_servers.sandbox),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(record["replies"]) for record in records] == [[f"dserver/{PUBLISHER}"]] * 2
    assert all("data" in record["replies"][f"dserver/{PUBLISHER}"] for record in records)
    assert list(tmp_path.iterdir()) == []  # no file named -


@requires_pytango10
def test_a_file_size_limit_leaves_whole_lines_that_append_continues(
    event_servers: EventServers, tmp_path: Path
) -> None:
    output = tmp_path / "polls.jsonl"

    def run(*args: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
        limited = [] if limit is None else [*WITH_FILE_SIZE_LIMIT, str(limit)]
        return subprocess.run(
            [*limited, *MONITOR, COUNTER, *FAST, "-o", str(output), *args],
            env=environment(event_servers.sandbox),
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )

    assert run("--count", "1").returncode == 0
    line = len(output.read_bytes())  # the counter is idle: every line is about as long
    limited = run("--count", "3", limit=line + line // 2)
    appended = run("--count", "1", "-a")

    assert appended.returncode == 0, appended.stderr
    records = [json.loads(text) for text in output.read_text().splitlines()]
    assert len(records) == 2
    assert limited.returncode == 1
    assert "error: cannot write to" in limited.stderr
    assert "(File too large)" in limited.stderr
    assert len(split_snapshots(limited.stdout.splitlines())) >= 2  # the second one too
