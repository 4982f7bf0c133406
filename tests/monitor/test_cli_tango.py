"""`tango-event-monitor` and `milonga monitor` run as a user would: subprocesses, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from milonga.monitor import query_server
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers
from tests.monitor.conftest import COUNTER, PUBLISHER, RELAY, SUBSCRIBER, EventServers

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")

MONITOR = [str(Path(sys.executable).with_name("tango-event-monitor"))]
MILONGA_MONITOR = [sys.executable, "-m", "milonga.cli", "monitor"]
WAIT_SECONDS = 30.0
FAST = ["--poll-period", "0.2"]


def environment(sandbox: TangoSandbox | None, tango_host: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["TANGO_HOST"] = tango_host or (sandbox.tango_host if sandbox else "")
    return env


def split_snapshots(lines: list[str]) -> list[list[str]]:
    """The complete snapshots in ``lines``: from a ``=`` rule to the same rule again."""
    snapshots: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if current is None:
            if line.startswith("=") and len(line) == 120:
                current = [line]
            continue
        current.append(line)
        if line == current[0]:
            snapshots.append(current)
            current = None
    return snapshots


class RunningMonitor:
    """A monitor subprocess whose output is read as it comes."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        self.stderr = ""
        self._ended = False
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def snapshots(self) -> list[list[str]]:
        with self._changed:
            return split_snapshots(list(self.lines))

    def wait_for(self, what: str, condition: Callable[[list[list[str]]], bool]) -> None:
        """Wait until the snapshots printed so far satisfy ``condition``."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._ended or condition(split_snapshots(self.lines)), WAIT_SECONDS
            )
            if not condition(split_snapshots(self.lines)):
                pytest.fail(
                    f"the monitor never showed {what}; it printed:\n" + "\n".join(self.lines)
                )

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: return the exit status and what went to stderr."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=WAIT_SECONDS)
        for reader in self._readers:
            reader.join(WAIT_SECONDS)
        return status, self.stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for reader in self._readers:
            reader.join(WAIT_SECONDS)


@pytest.fixture
def start_monitor() -> Iterator[Callable[[list[str], dict[str, str]], RunningMonitor]]:
    running: list[RunningMonitor] = []

    def start(command: list[str], env: dict[str, str]) -> RunningMonitor:
        running.append(RunningMonitor(command, env))
        return running[-1]

    yield start
    for monitor in running:
        monitor.kill()


def has(text: str) -> Callable[[list[list[str]]], bool]:
    return lambda snapshots: any(text in line for s in snapshots for line in s)


def perf_is_off(sandbox: TangoSandbox, *devices: str) -> bool:
    return all(query_server(sandbox.trl(d)).perf_monitoring is False for d in devices)


def test_follows_events_and_turns_sampling_off_after_ctrl_c(
    event_servers: EventServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
    tmp_path: Path,
) -> None:
    sandbox = event_servers.sandbox
    output = tmp_path / "polls.jsonl"
    monitor = start_monitor(
        [*MONITOR, COUNTER, RELAY, "--monitor", "-o", str(output), *FAST],
        environment(sandbox),
    )
    monitor.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)
    first = monitor.snapshots()[0]

    event_servers.increment(12)
    monitor.wait_for("the publisher's samples", has("- Server performance"))
    monitor.wait_for("the subscriber's samples", has("- Client performance"))
    seen = len(monitor.snapshots())
    status, stderr = monitor.interrupt()

    assert status == 130
    assert "Traceback" not in stderr
    assert stderr.count("whichever client queries a server first") == 1
    assert f"dserver/{PUBLISHER} (from {COUNTER})" in first[1]
    assert f"dserver/{SUBSCRIBER} (from {RELAY})" in "\n".join(first)
    assert "- New publishers" in first
    assert "- New subscriptions" in first
    text = "\n".join(line for s in monitor.snapshots() for line in s)
    assert "- Published events" in text
    assert "- Received events and callback changes" in text
    assert "Push Time [" in text
    assert "value Processing Time [" in text
    assert len(monitor.snapshots()) > seen, "a last snapshot before sampling is turned off"
    assert perf_is_off(sandbox, COUNTER, RELAY)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == len(monitor.snapshots())
    assert all(
        set(r["replies"]) == {f"dserver/{PUBLISHER}", f"dserver/{SUBSCRIBER}"} for r in records
    )
    assert all("data" in reply for r in records for reply in r["replies"].values())


def test_count_output_and_append(event_servers: EventServers, tmp_path: Path) -> None:
    sandbox = event_servers.sandbox
    output = tmp_path / "polls.jsonl"

    def run(*args: str, command: list[str] = MONITOR) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, COUNTER, *FAST, "-o", str(output), *args],
            env=environment(sandbox),
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )

    counted = run("--count", "2", "--monitor")
    assert counted.returncode == 0, counted.stderr
    assert len(split_snapshots(counted.stdout.splitlines())) == 2
    assert len(output.read_text().splitlines()) == 2
    assert perf_is_off(sandbox, COUNTER)

    appended = run("--count", "1", "-a")
    assert appended.returncode == 0, appended.stderr
    assert len(output.read_text().splitlines()) == 3

    replaced = run("--count", "1", command=MILONGA_MONITOR)
    assert replaced.returncode == 0, replaced.stderr
    assert len(output.read_text().splitlines()) == 1
    assert len(split_snapshots(replaced.stdout.splitlines())) == 1
    record = json.loads(output.read_text())
    assert list(record["replies"]) == [f"dserver/{PUBLISHER}"]


def test_a_restarted_server_is_picked_up_again(
    sandbox_servers: SandboxServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
) -> None:
    sandbox_servers.add_device("MonitorRestart/1", "Counter", "test/monitor/restart")
    sandbox_servers.start("MonitorRestart/1", "tests/devices/counter.py")
    sandbox = sandbox_servers.sandbox
    monitor = start_monitor([*MONITOR, "test/monitor/restart", "-m", *FAST], environment(sandbox))
    monitor.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)

    sandbox.stop_server("MonitorRestart/1")
    monitor.wait_for("the server not answering", has("- No answer"))
    sandbox_servers.start("MonitorRestart/1", "tests/devices/counter.py")
    monitor.wait_for("the server answering again", has("- Answering again"))
    # Sampling is turned on again right after that snapshot, before the next one.
    monitor.wait_for(
        "one more snapshot", lambda snapshots: "- Answering again" not in snapshots[-1]
    )
    status, stderr = monitor.interrupt()

    assert status == 130
    assert "Traceback" not in stderr
    assert "turned it on again" in stderr  # sampling is off in the new process
    assert perf_is_off(sandbox, "test/monitor/restart")
    no_answer = next(s for s in monitor.snapshots() if "- No answer" in s)
    error = no_answer[no_answer.index("- No answer") + 1]
    assert "dserver/monitorrestart/1" in error.lower()


@pytest.mark.parametrize(
    ("devices", "tango_host", "expected"),
    [
        (["no/such/device"], None, "unknown device 'no/such/device'"),
        ([COUNTER, "not/a/device/name"], None, "'not/a/device/name' is not a device name"),
        ([COUNTER], "127.0.0.1:1", "cannot reach the Tango database at 127.0.0.1:1 (TANGO_HOST)"),
    ],
)
def test_bad_devices_get_one_clear_line_and_status_2(
    event_servers: EventServers, devices: list[str], tango_host: str | None, expected: str
) -> None:
    result = subprocess.run(
        [*MONITOR, *devices],
        env=environment(event_servers.sandbox, tango_host),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("tango-event-monitor: error: ")
    assert expected in line


def test_help_explains_the_options_and_the_sampling_caveat() -> None:
    result = subprocess.run(
        [*MONITOR, "--help"], capture_output=True, text=True, timeout=WAIT_SECONDS, check=True
    )

    for option in ("--polling-period", "--poll-period", "--monitor-perf", "--append", "--count"):
        assert option in result.stdout
    assert "whichever client queries a server first" in result.stdout


def test_a_server_up_late_then_gone_gets_the_right_notes(
    sandbox_servers: SandboxServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
) -> None:
    sandbox_servers.add_device("MonitorLate/1", "Counter", "test/monitor/late")
    sandbox = sandbox_servers.sandbox
    monitor = start_monitor([*MONITOR, "test/monitor/late", "-m", *FAST], environment(sandbox))
    monitor.wait_for("the server not answering", has("- No answer"))

    sandbox_servers.start("MonitorLate/1", "tests/devices/counter.py")
    # Sampling is turned on right after the first snapshot it answers, before the next one.
    monitor.wait_for(
        "two snapshots in which it answers",
        lambda snapshots: sum("- No answer" not in s for s in snapshots) >= 2,
    )
    sandbox.stop_server("MonitorLate/1")
    monitor.wait_for("it not answering again", lambda s: "- No answer" in s[-1])
    status, stderr = monitor.interrupt()

    assert status == 130
    assert "Traceback" not in stderr
    assert "turned performance sampling on in dserver/MonitorLate/1" in stderr
    assert "restarted" not in stderr  # it had never answered before
    assert "warning: could not turn performance sampling off in dserver/MonitorLate/1" in stderr
    assert "run 'tango-event-monitor dserver/MonitorLate/1 --monitor --count 1'" in stderr
