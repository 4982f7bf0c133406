"""`tango-event-monitor` and `milonga monitor` run as a user would: subprocesses, signals,
and servers that are frozen, late or absent when it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from milonga.monitor import query_server
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers
from tests.monitor.conftest import COUNTER, PUBLISHER, RELAY, SUBSCRIBER, EventServers
from tests.monitor.frozen import frozen, start_ice

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")

MONITOR = [str(Path(sys.executable).with_name("tango-event-monitor"))]
MILONGA_MONITOR = [sys.executable, "-m", "milonga.cli", "monitor"]
WAIT_SECONDS = 60.0
FAST = ["--poll-period", "0.2"]


def environment(sandbox: TangoSandbox | None, tango_host: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["TANGO_HOST"] = tango_host or (sandbox.tango_host if sandbox else "")
    env["PYTHONFAULTHANDLER"] = "1"  # a monitor that hangs shows where, at SIGABRT
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
    """A monitor subprocess whose standard output and error are read as they come."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        self.error_lines: list[str] = []
        self._open = 2  # streams not read to their end yet
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.error_lines)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        """What went to standard error so far."""
        with self._changed:
            return "".join(line + "\n" for line in self.error_lines)

    def snapshots(self) -> list[list[str]]:
        with self._changed:
            return split_snapshots(list(self.lines))

    def wait_for(self, what: str, condition: Callable[[list[list[str]]], bool]) -> None:
        """Wait until the snapshots printed so far satisfy ``condition``."""
        self._wait(what, lambda: condition(split_snapshots(self.lines)), self.lines)

    def wait_for_stderr(self, what: str, text: str) -> None:
        """Wait until a line of standard error holds ``text``."""
        self._wait(what, lambda: any(text in line for line in self.error_lines), self.error_lines)

    def _wait(self, what: str, condition: Callable[[], bool], shown: list[str]) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._open == 0 or condition(), WAIT_SECONDS)
            if not condition():
                pytest.fail(f"the monitor never showed {what}; it printed:\n" + "\n".join(shown))

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``signum`` (Ctrl-C by default); return the exit status and the stderr."""
        self.process.send_signal(signum)
        return self.finish()

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: return the exit status and what went to stderr."""
        return self.stop(signal.SIGINT)

    def finish(self) -> tuple[int, str]:
        """Wait for the monitor to exit; return its exit status and what went to stderr.
        One that does not exit fails the test with the Python stack of each of its
        threads (`PYTHONFAULTHANDLER`, set by `environment`, prints them at SIGABRT)."""
        try:
            status = self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(WAIT_SECONDS)
            for reader in self._readers:
                reader.join(WAIT_SECONDS)
            pytest.fail(
                f"the monitor did not exit within {WAIT_SECONDS:g} s; its threads at "
                f"SIGABRT, after its standard error:\n{self.stderr}"
            )
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

    assert status == 130, stderr
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
    assert "which restarted (pid " in stderr  # another process, as the database says
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


NO_ANSWER_YET = "does not answer yet"
LEFT_ON = "could not turn performance sampling off"


def run_monitor(
    args: list[str], env: dict[str, str], stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MONITOR, *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "--count", "output error"])
def test_frozen_servers_never_leave_sampling_on_in_another(
    event_servers: EventServers,
    sandbox_servers: SandboxServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
    stop: str,
) -> None:
    sandbox = event_servers.sandbox
    (ice, ice_device), (ice2, ice2_device) = (start_ice(sandbox_servers, n) for n in (1, 2))
    command = [ice_device, COUNTER, ice2_device, RELAY, "--monitor", *FAST]
    env = environment(sandbox)
    with frozen(sandbox, ice), frozen(sandbox, ice2):
        if stop == "--count":
            result = run_monitor([*command, "--count", "2"], env)
            status, stderr = result.returncode, result.stderr
            assert len(split_snapshots(result.stdout.splitlines())) == 2
        elif stop == "output error":
            with open("/dev/full", "w") as full:  # every write fails: no space left
                result = run_monitor(command, env, stdout=full.fileno())
            status, stderr = result.returncode, result.stderr
            assert "cannot write to standard output" in stderr
        else:
            monitor = start_monitor([*MONITOR, *command], env)
            monitor.wait_for("a snapshot without their answers", has("- No answer"))
            status, stderr = monitor.stop(getattr(signal, stop))
        answering_off = perf_is_off(sandbox, COUNTER, RELAY)

    assert status == {"SIGINT": 130, "SIGTERM": 143, "--count": 0, "output error": 1}[stop]
    assert answering_off, "sampling was left on in a server that answers"
    assert "Traceback" not in stderr
    assert stderr.count(NO_ANSWER_YET) == 2  # the frozen ones, since the start
    assert LEFT_ON not in stderr  # neither frozen one ever had sampling on


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_server_busy_when_the_monitor_stops_has_sampling_turned_off(
    event_servers: EventServers,
    sandbox_servers: SandboxServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
    signum: int,
) -> None:
    sandbox = event_servers.sandbox
    ice, ice_device = start_ice(sandbox_servers)
    monitor = start_monitor([*MONITOR, ice_device, RELAY, "--monitor", *FAST], environment(sandbox))
    monitor.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)
    with frozen(sandbox, ice) as resume:
        monitor.wait_for("the frozen server not answering", has("- No answer"))
        monitor.process.send_signal(signum)
        # Its query is still under way, or the request to turn sampling off is.
        monitor.wait_for_stderr("that it waits for the frozen server", "waiting up to")
        resume()
        status, stderr = monitor.finish()

    assert status == (130 if signum == signal.SIGINT else 143)
    assert "Traceback" not in stderr
    assert perf_is_off(sandbox, ice_device, RELAY)
    assert LEFT_ON not in stderr
    assert "asked again" not in stderr
    # Tied to the 1 s timeout: the longest a call under way lasts, 1 + 3 + 1 s.
    assert f"waiting up to 5 s for dserver/{ice} (from {ice_device}) to answer" in stderr


def test_a_further_signal_ends_the_wait_for_a_frozen_server(
    event_servers: EventServers,
    sandbox_servers: SandboxServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
) -> None:
    sandbox = event_servers.sandbox
    ice, ice_device = start_ice(sandbox_servers)
    monitor = start_monitor([*MONITOR, ice_device, RELAY, "--monitor", *FAST], environment(sandbox))
    monitor.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)
    with frozen(sandbox, ice):
        monitor.wait_for("the frozen server not answering", has("- No answer"))
        monitor.process.send_signal(signal.SIGINT)
        monitor.wait_for_stderr("that it waits for the frozen server", "waiting up to")
        status, stderr = monitor.stop(signal.SIGINT)
        relay_off = perf_is_off(sandbox, RELAY)

    assert status == 130
    assert relay_off
    assert f"{LEFT_ON} in dserver/{ice} (no answer for " in stderr
    assert "Traceback" not in stderr


def test_no_warning_about_sampling_in_a_server_that_never_answered(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    sandbox = event_servers.sandbox
    sandbox_servers.add_device("MonitorNever/1", "Counter", "test/monitor/never")  # not started

    result = run_monitor(
        [COUNTER, "test/monitor/never", "--monitor", "--count", "2", *FAST],
        environment(sandbox),
    )

    assert result.returncode == 0, result.stderr
    assert f"dserver/MonitorNever/1 (from test/monitor/never) {NO_ANSWER_YET}" in result.stderr
    assert LEFT_ON not in result.stderr
    assert perf_is_off(sandbox, COUNTER)


def test_another_monitor_stopping_does_not_look_like_a_restart(
    event_servers: EventServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
) -> None:
    sandbox = event_servers.sandbox
    command = [*MONITOR, COUNTER, "--monitor", *FAST]
    first = start_monitor(command, environment(sandbox))
    first.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)
    second = start_monitor(command, environment(sandbox))
    second.wait_for("a first snapshot", lambda snapshots: len(snapshots) >= 1)

    assert second.interrupt()[0] == 130  # it turns sampling off in the publisher
    first.wait_for_stderr("that sampling is on again", "turned it on again")
    status, stderr = first.interrupt()

    assert status == 130
    assert "restarted" not in stderr
    assert f"dserver/{PUBLISHER} (from {COUNTER}) by another client" in stderr
    assert perf_is_off(sandbox, COUNTER)


def test_a_snapshot_longer_than_the_period_is_reported(
    event_servers: EventServers,
    sandbox_servers: SandboxServers,
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
) -> None:
    sandbox = event_servers.sandbox
    ice, ice_device = start_ice(sandbox_servers)
    with frozen(sandbox, ice):
        # Each snapshot waits the 1 s timeout for the frozen server: the period is 0.2 s.
        monitor = start_monitor([*MONITOR, ice_device, RELAY, *FAST], environment(sandbox))
        monitor.wait_for_stderr("that a snapshot was late", "longer than the 0.2 s polling period")
        status, stderr = monitor.interrupt()

    assert status == 130
    (late, *_) = [line for line in stderr.splitlines() if "polling period" in line]
    assert late.startswith("tango-event-monitor: warning: the snapshot of ")
    assert "the next one is " in late
    assert late.endswith(" s late")


@pytest.mark.parametrize(("fail_on", "expected_status"), [("warning", 3), ("error", 3), (None, 0)])
def test_fail_on_gives_status_3_after_a_server_that_does_not_answer(
    event_servers: EventServers,
    sandbox_servers: SandboxServers,
    tmp_path: Path,
    fail_on: str | None,
    expected_status: int,
) -> None:
    sandbox_servers.add_device("MonitorFailOn/1", "Counter", "test/monitor/failon")  # not started
    output = tmp_path / "polls.jsonl"
    option = [] if fail_on is None else ["--fail-on", fail_on]

    result = run_monitor(
        [COUNTER, "test/monitor/failon", "--count", "2", "-o", str(output), *FAST, *option],
        environment(event_servers.sandbox),
    )

    assert result.returncode == expected_status, result.stderr
    assert "Traceback" not in result.stderr
    (down, *_) = [s for s in split_snapshots(result.stdout.splitlines()) if "- Findings" in s]
    assert any(line.startswith("    error: server-not-answering: ") for line in down)
    kinds = [[f["kind"] for f in json.loads(line)["findings"]] for line in output.open()]
    assert kinds == [["server-not-answering"]] * 2


@pytest.mark.parametrize("fail_on", ["warning", "error"])
def test_fail_on_gives_status_0_on_a_healthy_system(
    event_servers: EventServers, fail_on: str
) -> None:
    result = run_monitor(
        [COUNTER, RELAY, "--count", "3", "--fail-on", fail_on, *FAST],
        environment(event_servers.sandbox),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "- Findings" not in result.stdout
