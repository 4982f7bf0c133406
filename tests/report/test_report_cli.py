"""`milonga report` run as a user would, in a subprocess: where the report goes, what it
says on the way, its exit status, and no traceback and no leftover file on error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from milonga.testing import wait_until

DEMO = Path(__file__).parents[1] / "demo" / "data"
MILONGA = [sys.executable, "-m", "milonga.cli"]
WAIT_SECONDS = 120.0  # a safety net only: every wait ends on the command exiting


def milonga_report(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MILONGA, "report", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=WAIT_SECONDS,
        check=False,
    )


def test_the_report_goes_beside_the_recording_and_says_where(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    shutil.copy(DEMO / "plain.jsonl", recording)
    done = milonga_report("run.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        f"milonga report: wrote run.html (10 polls, 2 servers, "
        f"{(tmp_path / 'run.html').stat().st_size / 1e6:.1f} MB)"
    ]
    assert sorted(os.listdir(tmp_path)) == ["run.html", "run.jsonl"]


def test_output_goes_where_asked(tmp_path: Path) -> None:
    done = milonga_report(DEMO / "fixed.jsonl", "-o", tmp_path / "fixed report.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert os.listdir(tmp_path) == ["fixed report.html"]
    assert "fixed report.html" in done.stdout


def test_unreadable_lines_are_warnings_and_the_report_is_still_written(tmp_path: Path) -> None:
    lines = (DEMO / "plain.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "run.jsonl").write_text("".join([*lines[:5], "{oops\n", *lines[5:]]))
    done = milonga_report("run.jsonl", "-o", "out.html", cwd=tmp_path)
    assert done.returncode == 0
    (warning,) = done.stderr.splitlines()
    assert warning.startswith("milonga report: warning: run.jsonl, line 6: it is not JSON")
    assert "wrote out.html (10 polls" in done.stdout
    assert "line 6: it is not JSON" in (tmp_path / "out.html").read_text()


@pytest.mark.parametrize(
    ("setup", "arguments", "expected"),
    [
        ("empty", ["run.jsonl"], "run.jsonl holds no poll that can be read; expected"),
        ("junk", ["run.jsonl"], "run.jsonl does not look like a recording of tango-event-mon"),
        ("missing", ["run.jsonl"], "run.jsonl does not exist; expected"),
        ("directory", ["run.jsonl"], "run.jsonl is a directory; expected"),
        (
            "recording",
            ["run.jsonl", "-o", "./run.jsonl"],
            "the report would overwrite the recording run.jsonl",
        ),
    ],
)
def test_a_recording_that_cannot_be_used_exits_2(
    tmp_path: Path, setup: str, arguments: list[str], expected: str
) -> None:
    recording = tmp_path / "run.jsonl"
    if setup == "empty":
        recording.touch()
    elif setup == "junk":  # as /etc/services
        recording.write_text("".join(f"service{number} {number}/tcp\n" for number in range(300)))
    elif setup == "directory":
        recording.mkdir()
    elif setup == "recording":
        shutil.copy(DEMO / "plain.jsonl", recording)
    before = sorted(os.listdir(tmp_path))
    done = milonga_report(*arguments, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"milonga report: error: {expected}")
    assert sorted(os.listdir(tmp_path)) == before
    if setup == "recording":
        assert recording.read_bytes() == (DEMO / "plain.jsonl").read_bytes()


def test_an_output_that_cannot_be_written_exits_1(tmp_path: Path) -> None:
    done = milonga_report(DEMO / "plain.jsonl", "-o", "nowhere/run.html", cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("milonga report: error: cannot write the report to nowhere/run.html")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_exits_130_and_leaves_no_file(tmp_path: Path) -> None:
    """The recording is a pipe: once the report has opened it, it is reading polls, and
    waits there for more when Ctrl-C comes."""
    recording = tmp_path / "run.jsonl"
    os.mkfifo(recording)
    process = subprocess.Popen(
        [*MILONGA, "report", "run.jsonl"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        with open(recording, "w") as pipe:  # returns once the report has opened it
            pipe.write((DEMO / "plain.jsonl").read_text())
            pipe.flush()
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert stdout == ""
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    assert os.listdir(tmp_path) == ["run.jsonl"]
    assert left_in_group(process.pid) == []


BLOCKED_WORKERS = """
import os, signal, sys
from pathlib import Path
from milonga.cli import main
from milonga.report import build

def server_figure(timeline, server):  # in a worker: say so, then wait to be stopped
    Path(sys.argv[1], str(os.getpid())).touch()
    while True:
        signal.pause()

build.server_figure = server_figure
build._cores = lambda: 2
sys.exit(main(["report", "run.jsonl"]))
"""


def test_ctrl_c_while_drawing_stops_the_workers_and_leaves_no_file(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The command runs with a `server_figure` that never returns: once both workers
    are in it, Ctrl-C must end them too (they ignore it) and leave nothing behind."""
    shutil.copy(DEMO / "plain.jsonl", tmp_path / "run.jsonl")
    markers = tmp_path_factory.mktemp("workers")
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_WORKERS, str(markers)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: len(os.listdir(markers)) >= 2 or process.poll() is not None,
            "both workers drawing",
            timeout=WAIT_SECONDS,
        )
        workers = [int(name) for name in os.listdir(markers)]
        assert len(workers) == 2, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        for pid in left_in_group(process.pid):
            os.kill(pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    assert os.listdir(tmp_path) == ["run.jsonl"]
    assert left_in_group(process.pid) == []
    assert not any(psutil.pid_exists(pid) for pid in workers)


def left_in_group(group: int) -> list[int]:
    """The processes of process group ``group`` still running (zombies aside)."""
    left = []
    for found in psutil.process_iter(["status"]):
        try:
            if os.getpgid(found.pid) == group and found.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(found.pid)
        except ProcessLookupError:
            continue
    return left


def test_matplotlib_says_nothing_when_home_cannot_be_written(tmp_path: Path) -> None:
    """No word from matplotlib about its configuration directory, and no directory left
    behind in the temporary directory it falls back on."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"}
    }
    environment.update(HOME="/proc/self/nonexistent", TMPDIR=str(temporary))
    done = subprocess.run(
        [*MILONGA, "report", DEMO / "plain.jsonl", "-o", tmp_path / "run.html"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert os.listdir(temporary) == []
