"""The `milonga` command line, run as a user would: a real subprocess and real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import tango

from milonga import __version__
from milonga.testing import wait_until

MILONGA = [sys.executable, "-m", "milonga.cli"]
MONITOR = [str(Path(sys.executable).with_name("tango-event-monitor"))]
WAIT_SECONDS = 60.0  # a safety net only: every wait ends on a condition


SandboxCommand = tuple[subprocess.Popen[str], str]
"""A running `milonga sandbox` process and the TANGO_HOST it printed."""


@pytest.fixture
def start_sandbox_command() -> Iterator[Callable[..., SandboxCommand]]:
    """Starts `milonga sandbox ARGS...` and returns once it has printed its TANGO_HOST.
    Whatever a test leaves running is killed, and temporary directories removed, after it.
    """
    started: list[tuple[subprocess.Popen[str], set[str]]] = []

    def start(*args: str) -> SandboxCommand:
        process = subprocess.Popen(
            [*MILONGA, "sandbox", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        directories: set[str] = set()  # the database runs in the sandbox's directory
        started.append((process, directories))
        assert process.stdout is not None
        for line in process.stdout:
            if "export TANGO_HOST=" in line:
                children = psutil.Process(process.pid).children(recursive=True)
                directories.update(child.cwd() for child in children)
                return process, line.split("=", 1)[1].strip()
        pytest.fail(f"milonga sandbox exited early: {process.communicate()}")

    yield start
    for process, directories in started:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
        process.communicate()
        for directory in directories:
            if Path(directory).name.startswith("milonga-sandbox-"):
                shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def running_sandbox(start_sandbox_command: Callable[..., SandboxCommand]) -> SandboxCommand:
    """`milonga sandbox` in a temporary directory, once it has printed its TANGO_HOST."""
    return start_sandbox_command()


def _database_answers(tango_host: str) -> bool:
    host, port = tango_host.split(":")
    return bool(tango.Database(host, int(port)).get_info())


def _sandbox_directory(process: subprocess.Popen[str]) -> Path:
    """The temporary directory of a running `milonga sandbox`, where its database runs."""
    (database,) = [
        child
        for child in psutil.Process(process.pid).children(recursive=True)
        if "database" in child.cmdline()
    ]
    return Path(database.cwd())


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [
        (signal.SIGINT, 130, "milonga: interrupted; everything it started has been stopped"),
        (signal.SIGTERM, 143, "milonga: terminated; everything it started has been stopped"),
        (signal.SIGHUP, 143, "milonga: terminated; everything it started has been stopped"),
    ],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_sandbox_command_serves_until_interrupted(
    running_sandbox: SandboxCommand,
    signum: signal.Signals,
    status: int,
    said: str,
) -> None:
    process, tango_host = running_sandbox
    assert _database_answers(tango_host)
    children = psutil.Process(process.pid).children(recursive=True)
    directory = _sandbox_directory(process)

    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=WAIT_SECONDS)

    assert process.returncode == status
    assert stderr.splitlines() == [said]
    assert stdout.endswith("Stopping the sandbox.\n")
    assert not [child for child in children if child.is_running()]
    assert not directory.exists()


def test_sandbox_processes_and_directory_go_when_the_command_is_killed(
    running_sandbox: SandboxCommand,
) -> None:
    process, _ = running_sandbox
    children = psutil.Process(process.pid).children(recursive=True)
    directory = _sandbox_directory(process)
    assert children

    process.kill()

    _, alive = psutil.wait_procs(children, timeout=WAIT_SECONDS)
    assert not alive, "orphaned sandbox processes must stop by themselves"
    wait_until(lambda: not directory.exists(), "the sandbox's directory to go", WAIT_SECONDS)


def test_sandbox_directory_that_cannot_be_used_is_a_clear_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")

    result = subprocess.run(
        [*MILONGA, "sandbox", "--directory", str(not_a_directory / "db")],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert "cannot use" in result.stderr
    assert "give a writable directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_kept_directory_serves_one_sandbox_at_a_time_and_again_after(
    start_sandbox_command: Callable[..., SandboxCommand], tmp_path: Path
) -> None:
    first, _ = start_sandbox_command("--directory", str(tmp_path))

    second = subprocess.run(
        [*MILONGA, "sandbox", "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert second.returncode == 1
    assert second.stdout == "", "it must not print a TANGO_HOST of the first one's database"
    assert f"{tmp_path} is in use by another sandbox (process {first.pid})" in second.stderr
    assert "Traceback" not in second.stderr

    first.send_signal(signal.SIGINT)
    first.communicate(timeout=WAIT_SECONDS)
    _, third_host = start_sandbox_command("--directory", str(tmp_path))  # its own port
    assert _database_answers(third_host)


def test_an_empty_sandbox_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*MILONGA, "sandbox", "--directory", ""],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 2
    assert "argument --directory: got an empty directory name" in result.stderr
    assert "use '.' for the current one" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written in the current directory"


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
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


# Installed as `sitecustomize` in a test's subprocess: the first import of the module
# named by MILONGA_TEST_HOLD_IMPORT waits, while the test sends its signal, until the
# test says go.  numpy is imported from the C code of PyTango's extension, which prints
# and swallows an exception raised there.
HOLD_IMPORT = textwrap.dedent(
    """
    import os
    import sys


    class HoldImport:
        held = False

        def find_spec(self, name, path=None, target=None):
            if name == os.environ["MILONGA_TEST_HOLD_IMPORT"] and not self.held:
                self.held = True
                os.write(int(os.environ["MILONGA_TEST_HELD_FD"]), b"held")
                os.read(int(os.environ["MILONGA_TEST_GO_FD"]), 1)
            return None


    sys.meta_path.insert(0, HoldImport())
    """
)

COMMANDS = {
    "milonga sandbox": [*MILONGA, "sandbox"],
    "milonga demo": [*MILONGA, "demo", "--quick"],
    "milonga monitor": [*MILONGA, "monitor", "test/held/1"],
    "tango-event-monitor": [*MONITOR, "test/held/1"],
}


def _signalled_while_importing(
    command: list[str], module: str, signum: signal.Signals, hook: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``command``, send it ``signum`` while it imports ``module``, and let it end."""
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOLD_IMPORT)
    held_read, held_write = os.pipe()
    go_read, go_write = os.pipe()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "MILONGA_TEST_HOLD_IMPORT": module,
        "MILONGA_TEST_HELD_FD": str(held_write),
        "MILONGA_TEST_GO_FD": str(go_read),
    }
    process = subprocess.Popen(
        command,
        env=env,
        pass_fds=(held_write, go_read),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(held_write)
    os.close(go_read)
    try:
        assert os.read(held_read, 4) == b"held", f"{command} never imported {module}"
        process.send_signal(signum)
        os.write(go_write, b"go")
        stdout, stderr = process.communicate(timeout=WAIT_SECONDS)
    finally:
        os.close(held_read)
        os.close(go_write)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("module", ["tango", "numpy"])
@pytest.mark.parametrize("name", COMMANDS)
def test_ctrl_c_while_importing_tango_ends_the_command_in_one_line(
    name: str, module: str, tmp_path: Path
) -> None:
    result = _signalled_while_importing(COMMANDS[name], module, signal.SIGINT, tmp_path)

    prog = name.partition(" ")[0]
    assert (result.returncode, result.stderr, result.stdout) == (
        130,
        f"{prog}: interrupted while starting; it started nothing\n",
        "",
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_sigterm_while_importing_tango_ends_the_command_in_one_line(
    name: str, tmp_path: Path
) -> None:
    result = _signalled_while_importing(COMMANDS[name], "numpy", signal.SIGTERM, tmp_path)

    prog = name.partition(" ")[0]
    assert (result.returncode, result.stderr, result.stdout) == (
        143,
        f"{prog}: terminated while starting; it started nothing\n",
        "",
    )


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM, which Python has not by default."""
    status = Path(f"/proc/{pid}/status").read_text()
    (caught,) = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(caught, 16) & 1 << (signal.SIGTERM - 1))


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_as_soon_as_the_sandbox_command_handles_it(attempt: int) -> None:
    """Wherever the signal lands, importing or starting or running, the end is clean."""
    process = subprocess.Popen(
        [*MILONGA, "sandbox"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: _catches_sigterm(process.pid), "stop-signal handlers", WAIT_SECONDS)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr


def test_milonga_report_works_where_tango_cannot_be_imported(tmp_path: Path) -> None:
    """A report is made on any machine with the recording: a laptop without PyTango."""
    broken = tmp_path / "broken"
    (broken / "tango").mkdir(parents=True)
    (broken / "tango" / "__init__.py").write_text("raise ImportError('no Tango here')\n")
    recording = Path(__file__).parent / "demo" / "data" / "plain.jsonl"
    report = tmp_path / "plain.html"

    result = subprocess.run(
        [*MILONGA, "report", str(recording), "-o", str(report)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(broken), os.getcwd()])},
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"milonga report: wrote {report} (")
    assert report.read_text().startswith("<!DOCTYPE html>")
