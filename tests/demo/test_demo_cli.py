"""`milonga demo --quick`, run as a user would: a real subprocess, real servers, real signals."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import tango

from milonga.monitor import findings_of, read_polls

MILONGA = [sys.executable, "-m", "milonga.cli"]
RUNNING = "The control system is running (TANGO_HOST="
KEPT = "Press Ctrl-C to stop it."
SCANNING = "Calling foo/bar/top Scan()"
RUN_SECONDS = 90
STOP_SECONDS = 20


@dataclass
class Demo:
    """A `milonga demo` subprocess, its output so far, and every process it started."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    started: dict[int, psutil.Process] = field(default_factory=dict)

    def read_until(self, marker: str) -> str:
        """Read output until a line containing ``marker``; return that line."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._note_children()
            if marker in line:
                return line
        pytest.fail(f"the demo ended without printing {marker!r}:\n{''.join(self.lines)}")

    def finish(self) -> tuple[str, str]:
        """Wait for the demo to exit; return all its output and its stderr."""
        stdout, stderr = self.process.communicate(timeout=RUN_SECONDS)
        self.lines.append(stdout)
        return "".join(self.lines), stderr

    def left_behind(self) -> list[psutil.Process]:
        """Processes the demo started that still run."""
        alive = []
        for child in self.started.values():
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        return alive

    def _note_children(self) -> None:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.started.update((child.pid, child) for child in children)


@pytest.fixture
def start_demo() -> Iterator[Callable[..., Demo]]:
    """Starts `milonga demo ARGS...`; kills what is left of it when the test ends."""
    started: list[Demo] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Demo:
        process = subprocess.Popen(
            [*MILONGA, "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(Demo(process))
        return started[-1]

    yield start
    for demo in started:
        if demo.process.poll() is None:
            for child in demo.started.values():
                child.kill()
            demo.process.kill()
            demo.process.communicate()


def tango_host_of(line: str) -> str:
    return line.split("TANGO_HOST=", 1)[1].split(")", 1)[0].strip()


def top_answers(tango_host: str) -> bool:
    proxy = tango.DeviceProxy(f"tango://{tango_host}/foo/bar/top")
    return proxy.ping() >= 0


def test_plain_demo_times_out_diagnoses_and_keeps_running_until_ctrl_c(
    start_demo: Callable[..., Demo],
) -> None:
    demo = start_demo("--quick", "--keep-running")
    tango_host = tango_host_of(demo.read_until(RUNNING))
    demo.read_until(KEPT)
    assert top_answers(tango_host)
    assert demo.left_behind()

    demo.process.send_signal(signal.SIGINT)
    output, stderr = demo.finish()

    assert demo.process.returncode == 0, stderr
    assert "Traceback" not in output + stderr
    assert "foo/bar/top Scan() failed after" in output
    assert "Timeout waiting for Mode.IDLE" in output
    assert "Scan complete in" in output
    assert "- Client performance" in output, "the monitor printed its --monitor tables"
    assert "warning: slow-callback: " in output, "the monitor printed its findings"
    diagnosis = " ".join(output.split("Diagnosis, from the", 1)[1].split())
    assert "Cause: dserver/MyServer/top takes" in diagnosis
    assert "to handle one event of foo/bar/hw/position.change (median)" in diagnosis
    assert "Rates: dserver/MyServer/hw pushed" in diagnosis
    assert "Latency: events reached their first callback in dserver/MyServer/top" in diagnosis
    assert "they were late, not lost" in diagnosis
    assert (
        "tango-event-monitor raised these findings: slow-callback (warning) on "
        "dserver/MyServer/top: foo/bar/hw/position.change"
    ) in diagnosis
    assert f"export TANGO_HOST={tango_host}" in output
    assert "Stopping the control system." in output
    assert not demo.left_behind()


def test_fixed_demo_completes_the_scan_and_compares(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--quick", "--fixed")
    demo.read_until(RUNNING)  # the system as it is
    demo.read_until(RUNNING)  # the same system with the scheduler
    assert len(demo.left_behind()) >= 3, "a database and two device servers"
    output, stderr = demo.finish()

    assert demo.process.returncode == 0, stderr
    assert "Traceback" not in output + stderr
    fixed = output.split("Now the same system with CallbackScheduler", 1)[1]
    assert "foo/bar/top Scan() returned after" in fixed
    assert "Cause: none left" in " ".join(fixed.split())
    assert "tango-event-monitor raised no finding" in " ".join(fixed.split())
    assert "- Client performance" in fixed
    comparison = fixed.split("Before and after, on this machine:", 1)[1].splitlines()
    (scan,) = [line for line in comparison if line.split()[:1] == ["Scan()"]]
    assert "failed after" in scan.split("returned after")[0]
    (missed,) = [line for line in comparison if line.split()[:2] == ["missed", "events"]]
    assert missed.split()[-2:] == ["0", "0"]
    (findings,) = [line for line in comparison if line.split()[:2] == ["monitor", "findings"]]
    assert "slow-callback" in findings
    assert findings.split()[-1] == "none"
    assert not demo.left_behind()


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [
        (signal.SIGINT, 130, "interrupted; everything it started has been stopped"),
        (signal.SIGTERM, 143, "terminated; everything it started has been stopped"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_stops_the_demo_and_everything_it_started(
    start_demo: Callable[..., Demo], signum: signal.Signals, status: int, said: str
) -> None:
    demo = start_demo("--quick")
    demo.read_until(RUNNING)
    demo.read_until(SCANNING)  # the signal comes while the demo waits for Scan() to return
    assert demo.left_behind()

    demo.process.send_signal(signum)
    output, stderr = demo.finish()

    assert demo.process.returncode == status
    assert said in stderr
    assert "Traceback" not in output + stderr
    assert not demo.left_behind()


def test_servers_that_cannot_start_are_a_clear_error(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    # A real interpreter without site-packages, hence without PyTango, as a user may name.
    python = tmp_path / "python-without-pytango"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "$@"\n')
    python.chmod(0o755)
    demo = start_demo("--quick", env={**os.environ, "MILONGA_SANDBOX_PYTHON": str(python)})

    output, stderr = demo.finish()

    assert demo.process.returncode == 1
    assert stderr.startswith("milonga: error: the demo's Tango database did not start:")
    assert "No module named 'tango'" in stderr, "what was wrong, as the server said it"
    assert "Check that it has PyTango 10.3 or later" in stderr, "what to do"
    assert "Traceback" not in output + stderr


def recorded_findings(path: Path) -> set[str]:
    """The kinds of the findings recorded at any line of ``path``."""
    lines = path.read_text().splitlines()
    return {finding["kind"] for line in lines for finding in json.loads(line)["findings"]}


def snapshots_diagnosed(output: str) -> list[int]:
    """How many snapshots each diagnosis in ``output`` says it was made from."""
    parts = output.split("Diagnosis, from the ")[1:]
    return [int(part.split(" snapshots", 1)[0]) for part in parts]


def test_the_demo_records_every_poll_of_each_run_for_the_report(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    directory = tmp_path / "not" / "there" / "yet"
    demo = start_demo("--quick", "--fixed", "--record", str(directory))
    output, stderr = demo.finish()

    assert demo.process.returncode == 0, stderr
    plain, fixed = directory / "plain.jsonl", directory / "fixed.jsonl"
    plain_polls, fixed_polls = read_polls(plain), read_polls(fixed)
    assert snapshots_diagnosed(output) == [len(plain_polls), len(fixed_polls)], "every poll"
    assert "slow-callback" in recorded_findings(plain)
    assert not recorded_findings(fixed)
    again = {finding.kind for findings in findings_of(plain_polls) for finding in findings.active}
    assert "slow-callback" in again, "the recording holds what the findings rest on"
    milonga = Path(sys.executable).with_name("milonga")
    assert f"{milonga} report {plain}" in output
    assert f"{milonga} report {fixed}" in output
    assert "Traceback" not in output + stderr


def a_file(tmp_path: Path) -> str:
    """A regular file where the directory should be."""
    (tmp_path / "a-file").touch()
    return str(tmp_path / "a-file")


def a_directory_where_plain_goes(tmp_path: Path) -> str:
    """A directory in which plain.jsonl is a directory."""
    (tmp_path / "plain.jsonl").mkdir()
    return str(tmp_path)


def nothing(tmp_path: Path) -> str:
    return ""


@pytest.mark.parametrize(
    ("record", "status", "said"),
    [
        (a_file, 1, "a-file (it is not a directory)"),
        (a_directory_where_plain_goes, 1, "plain.jsonl (Is a directory)"),
        (nothing, 2, "argument --record: got an empty directory name"),
    ],
    ids=["a-file", "plain-is-a-directory", "empty"],
)
def test_a_record_directory_that_cannot_be_written_is_a_clear_error_before_the_demo_starts(
    start_demo: Callable[..., Demo],
    tmp_path: Path,
    record: Callable[[Path], str],
    status: int,
    said: str,
) -> None:
    demo = start_demo("--quick", "--record", record(tmp_path))
    output, stderr = demo.finish()

    assert demo.process.returncode == status
    assert said in stderr
    assert "Traceback" not in output + stderr
    assert "Starting" not in output, "nothing started"
    if status == 1:
        assert stderr.startswith("milonga: error: cannot record the demo's polls in ")
        assert "give --record a directory that can be created and written to" in stderr


def test_a_recording_that_fails_as_the_demo_runs_stops_it_with_a_clear_error(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    (tmp_path / "plain.jsonl").symlink_to("/dev/full")  # opens, then takes nothing
    demo = start_demo("--quick", "--record", str(tmp_path))
    demo.read_until(RUNNING)
    assert demo.left_behind()
    output, stderr = demo.finish()

    assert demo.process.returncode == 1
    assert stderr.startswith(
        f"milonga: error: cannot record the demo's polls in {tmp_path / 'plain.jsonl'} "
        "(No space left on device); make sure it can be written"
    )
    assert stderr.count("cannot record") == 1, "said once"
    assert "Traceback" not in output + stderr
    assert not demo.left_behind()
