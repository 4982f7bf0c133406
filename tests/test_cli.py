"""The `milonga` command line, run as a user would: a real subprocess and real signals."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import tango

from milonga import __version__

MILONGA = [sys.executable, "-m", "milonga.cli"]
STOP_SECONDS = 20


@pytest.fixture
def running_sandbox() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`milonga sandbox` in a subprocess, once it has printed its TANGO_HOST.  Its
    temporary directory goes too, even if a test killed it before it could remove it."""
    process = subprocess.Popen(
        [*MILONGA, "sandbox"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    directories: set[str] = set()  # the database runs in the sandbox's directory
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "export TANGO_HOST=" in line:
                children = psutil.Process(process.pid).children(recursive=True)
                directories = {child.cwd() for child in children}
                yield process, line.split("=", 1)[1].strip()
                break
        else:
            pytest.fail(f"milonga sandbox exited early: {process.communicate()}")
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
        process.communicate()
        for directory in directories:
            if Path(directory).name.startswith("milonga-sandbox-"):
                shutil.rmtree(directory, ignore_errors=True)


def _database_answers(tango_host: str) -> bool:
    host, port = tango_host.split(":")
    return bool(tango.Database(host, int(port)).get_info())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_sandbox_command_serves_until_interrupted(
    running_sandbox: tuple[subprocess.Popen[str], str], signum: signal.Signals
) -> None:
    process, tango_host = running_sandbox
    assert _database_answers(tango_host)
    children = psutil.Process(process.pid).children(recursive=True)

    process.send_signal(signum)
    _, stderr = process.communicate(timeout=STOP_SECONDS)

    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert not [child for child in children if child.is_running()]


def test_sandbox_processes_stop_when_the_command_is_killed(
    running_sandbox: tuple[subprocess.Popen[str], str],
) -> None:
    process, _ = running_sandbox
    children = psutil.Process(process.pid).children(recursive=True)
    assert children

    process.kill()

    _, alive = psutil.wait_procs(children, timeout=STOP_SECONDS)
    assert not alive, "orphaned sandbox processes must stop by themselves"


def test_sandbox_directory_that_cannot_be_used_is_a_clear_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")

    result = subprocess.run(
        [*MILONGA, "sandbox", "--directory", str(not_a_directory / "db")],
        capture_output=True,
        text=True,
        timeout=STOP_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert "cannot use" in result.stderr
    assert "give a writable directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = subprocess.run([*MILONGA, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"milonga {__version__}"


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [(">&-", "standard output is closed"), ("> /dev/full", "cannot write to standard output")],
    ids=["closed", "full"],
)
def test_standard_output_that_takes_nothing_is_a_clear_error(redirect: str, expected: str) -> None:
    command = " ".join([*MILONGA, "sandbox"])
    result = subprocess.run(
        ["sh", "-c", f"exec {command} {redirect}"],
        capture_output=True,
        text=True,
        timeout=STOP_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
