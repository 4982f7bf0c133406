"""What keeps the suite independent of the machine's speed: the Hypothesis profile, and
`scripts/check_reliability.py` (`make check-reliability`), tried with stand-in commands."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from hypothesis import HealthCheck, settings

from milonga.testing import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECK = [sys.executable, str(REPO_ROOT / "scripts" / "check_reliability.py")]
WAIT_SECONDS = 60.0  # a safety net only: every wait ends on a condition

# A stand-in for `make test`: notes its own process and the other children of the check
# (the spinners) in the file argv[1], then exits with status argv[2], or hangs if "hang".
NOTE_AND_EXIT = """
import json, sys, threading
from pathlib import Path
import psutil
me = psutil.Process()
others = [child for child in me.parent().children() if child.pid != me.pid]
processes = [[p.pid, p.create_time(), p.cmdline()] for p in [me, *others]]
written = Path(sys.argv[1] + ".part")
written.write_text(json.dumps(processes))
written.replace(sys.argv[1])
if sys.argv[2] == "hang":
    threading.Event().wait()
sys.exit(int(sys.argv[2]))
"""


def test_property_tests_have_no_deadline_and_no_slowness_health_check() -> None:
    assert settings().deadline is None
    assert HealthCheck.too_slow in settings().suppress_health_check


def test_a_suite_started_with_ctrl_c_ignored_gives_it_back_to_the_tools_it_runs() -> None:
    # What a shell does to a background job, then what pytest does first: load conftest.
    suite = (
        "import signal, subprocess, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "import tests.conftest\n"
        "tool = 'import signal; print(signal.getsignal(signal.SIGINT))'\n"
        "subprocess.run([sys.executable, '-c', tool], check=True)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", suite],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "default_int_handler" in result.stdout, "Ctrl-C would not stop the tool"


def _environment(tmp_path: Path, command: str, idle: int, busy: int) -> dict[str, str]:
    return {
        **os.environ,
        "CHECK_COMMAND": command,
        "CHECK_IDLE_RUNS": str(idle),
        "CHECK_BUSY_RUNS": str(busy),
        "CHECK_LOG_DIR": str(tmp_path / "logs"),
    }


def _noting(notes: Path, outcome: str) -> str:
    return shlex.join([sys.executable, "-c", NOTE_AND_EXIT, str(notes), outcome])


def _check(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CHECK, env=environment, capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
    )


def _running(noted: list[list[object]]) -> list[list[object]]:
    """The noted processes (pid, creation time, command) that still run."""
    alive = []
    for pid, created, command in noted:
        try:
            process = psutil.Process(int(str(pid)))
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append([pid, created, command])
        except psutil.NoSuchProcess:
            pass
    return alive


def test_each_run_gets_a_line_and_all_passing_gets_a_summary(tmp_path: Path) -> None:
    result = _check(_environment(tmp_path, "true", idle=2, busy=1))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("true: 2 idle and 1 busy runs; logs in ")
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["run", "1/3", "idle", "passed"],
        ["run", "2/3", "idle", "passed"],
        ["run", "3/3", "busy", "passed"],
    ]
    assert lines[4].startswith("PASSED: 3 runs (2 idle, 1 busy) in ")
    assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == [
        "run-1-idle.log",
        "run-2-idle.log",
        "run-3-busy.log",
    ]


def test_busy_runs_have_one_spinner_per_core_and_leave_none_behind(tmp_path: Path) -> None:
    notes = tmp_path / "noted.json"

    result = _check(_environment(tmp_path, _noting(notes, "0"), idle=0, busy=1))

    assert result.returncode == 0, result.stderr
    run, *spinners = json.loads(notes.read_text())
    assert len(spinners) == len(os.sched_getaffinity(0))
    assert all(command[1:] == ["-c", "while True: pass"] for _, _, command in spinners)
    assert _running([run, *spinners]) == []


def test_the_first_failing_run_ends_the_check_with_the_end_of_its_log(tmp_path: Path) -> None:
    result = _check(_environment(tmp_path, "sh -c 'echo it broke; exit 3'", idle=3, busy=2))

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[1].split()[:4] == ["run", "1/5", "idle", "failed"]
    assert "it broke" in lines
    assert lines[-1] == "FAILED: run 1/5 (idle) failed; no run after it was made"
    assert not [line for line in lines if line.startswith("run 2/")]


def test_sigterm_stops_the_run_under_way_and_the_spinners(tmp_path: Path) -> None:
    notes = tmp_path / "noted.json"
    environment = _environment(tmp_path, _noting(notes, "hang"), idle=0, busy=1)
    check = subprocess.Popen(
        CHECK, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(notes.exists, "the run to note its processes", WAIT_SECONDS)
        check.send_signal(signal.SIGTERM)
        _, stderr = check.communicate(timeout=WAIT_SECONDS)
    finally:
        if check.poll() is None:
            check.kill()
            check.communicate()

    assert check.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr
    assert "Traceback" not in stderr
    assert _running(json.loads(notes.read_text())) == []


def test_a_bad_setting_is_one_line_naming_it_and_what_to_give(tmp_path: Path) -> None:
    result = _check({**_environment(tmp_path, "true", 1, 1), "CHECK_IDLE_RUNS": "many"})

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "check-reliability: error: CHECK_IDLE_RUNS='many' is not a number of runs; "
        "give 0 or more, e.g. 3"
    ]
