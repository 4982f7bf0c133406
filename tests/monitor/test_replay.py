"""`tango-event-monitor --replay RUN.jsonl`: a recording printed as the live run printed it,
without Tango; bad lines are warnings, and bad arguments or files one clear error."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from milonga.monitor.analysis import findings_of
from milonga.monitor.cli import (
    EXIT_FAILED,
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    build_parser,
    run,
)
from milonga.monitor.jsonl import TOLD_LINES, read_polls
from milonga.terminated import EXIT_INTERRUPTED
from milonga.testing import SandboxServers
from tests.monitor.conftest import COUNTER, RELAY, EventServers
from tests.monitor.test_cli_tango import (
    FAST,
    MONITOR,
    WAIT_SECONDS,
    environment,
    run_monitor,
    split_snapshots,
)

ROOT = Path(__file__).parents[2]
FIXTURES = sorted(
    [
        *(ROOT / "tests/demo/data").glob("*.jsonl"),
        *(ROOT / "tests/monitor/data/findings").glob("*.jsonl"),
    ]
)
NOT_ANSWERING = ROOT / "tests/monitor/data/findings/server-not-answering.jsonl"
requires_pytango10 = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")
FINDING_LINE = re.compile(r"^    (\w+): ([\w-]+): ")


def replay(*argv: str) -> tuple[int, str, str]:
    """Run the command line in this process; return its status, standard output and
    standard error."""
    out, err = io.StringIO(), io.StringIO()
    status = run(build_parser().parse_args(list(argv)), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.name)
def test_each_recording_replays_one_snapshot_per_poll_with_its_findings(path: Path) -> None:
    """The findings are this version's, made again from the replies, not those recorded."""
    status, out, err = replay("--replay", str(path))

    assert (status, err) == (EXIT_OK, "")
    snapshots = split_snapshots(out.splitlines())
    every = findings_of(read_polls(path))
    assert len(snapshots) == len(every)
    for snapshot, findings in zip(snapshots, every, strict=True):
        shown = [match.groups() for line in snapshot if (match := FINDING_LINE.match(line))]
        made = [(finding.severity.label, finding.kind) for finding in findings.active]
        assert sorted(shown) == sorted(made)


def test_a_replay_imports_no_tango_and_needs_no_database() -> None:
    """No server is contacted: Tango is not even imported, and TANGO_HOST names nothing."""
    check = (
        "import sys\n"
        "from milonga.cli import monitor_main\n"
        f"status = monitor_main(['--replay', {str(NOT_ANSWERING)!r}, '-q'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tango' "
        "or m in ('milonga.monitor.collector', 'milonga.monitor.loop'))\n"
        "print(status, loaded)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TANGO_HOST": "127.0.0.1:1"},
    )

    assert (result.stdout.strip(), result.stderr) == ("0 []", "")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["test/monitor/counter"], "DEVICE"),
        (["--all"], "--all"),
        (["--serve", "0"], "--serve"),
        (["--monitor"], "--monitor"),
        (["--polling-period", "10"], "--polling-period"),
        (["--count", "2"], "--count"),
        (["--all", "--count", "2"], "--all, --count; leave them out"),
    ],
)
def test_options_of_a_live_run_are_refused_by_name(options: list[str], named: str) -> None:
    status, out, err = replay("--replay", str(NOT_ANSWERING), *options)

    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith(f"{PROG}: error: --replay reads a recording and contacts no server")
    assert named in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read {path} (No such file or directory)"),
        ("", "{path} holds no poll"),
        ("not a poll\n", "{path} holds no poll"),
    ],
)
def test_a_file_that_cannot_be_replayed_is_one_error(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "run.jsonl"
    if content is not None:
        path.write_text(content)

    status, out, err = replay("--replay", str(path))

    assert (status, out) == (EXIT_USAGE, "")
    *warnings, last = err.splitlines()
    assert last.startswith(f"{PROG}: error: {expected.format(path=path)}")
    assert last.endswith(f"give a recording made with {PROG} -o FILE")
    assert all(line.startswith(f"{PROG}: warning: {path}, line 1: ") for line in warnings)


def test_a_directory_is_one_error(tmp_path: Path) -> None:
    status, _, err = replay("--replay", str(tmp_path))

    assert status == EXIT_USAGE
    assert err == (
        f"{PROG}: error: cannot read {tmp_path} (Is a directory); give a recording made "
        f"with {PROG} -o FILE\n"
    )


def test_bad_lines_are_warnings_and_the_rest_is_replayed(tmp_path: Path) -> None:
    lines = NOT_ANSWERING.read_text().splitlines(keepends=True)
    path = tmp_path / "run.jsonl"
    path.write_text(lines[0] + "{not json\n" + "".join(lines[1:]) + lines[0][:40])

    status, out, err = replay("--replay", str(path))
    _, whole, _ = replay("--replay", str(NOT_ANSWERING))

    assert status == EXIT_OK
    assert out == whole
    assert err.splitlines() == [
        f"{PROG}: warning: {path}, line 2: it is not JSON (Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)): either the line was cut off (a monitor "
        "stopped while writing it, and another program appended after it) or it is not a poll "
        f"as `tango-event-monitor -o FILE` writes it. The line is skipped and the others are "
        "read.",
        f"{PROG}: warning: {path}, line {len(lines) + 2}: the last line is cut off (no newline, "
        "and not JSON): a monitor is still writing it, or stopped while writing it; it is left "
        "out, and reading it again once the monitor has finished the line takes it in.",
    ]


def test_a_file_that_starts_with_many_lines_of_no_poll_is_one_error(tmp_path: Path) -> None:
    """Not a warning for each of its lines: it is no recording."""
    path = tmp_path / "services"
    path.write_text("ftp 21/tcp\n" * 300 + NOT_ANSWERING.read_text())

    status, out, err = replay("--replay", str(path))

    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith(
        f"{PROG}: error: {path} does not look like a recording of tango-event-monitor -o: "
        f"its first {TOLD_LINES} lines are not polls"
    )
    assert err.count("\n") == 1


def test_a_clock_set_back_is_told_and_every_poll_replayed(tmp_path: Path) -> None:
    """The polls stay as the live run printed them; each that goes back in time is told."""
    records = [json.loads(line) for line in NOT_ANSWERING.read_text().splitlines()]
    path = tmp_path / "run.jsonl"
    path.write_text(moved(records[:3], timedelta()) + moved(records[3:], timedelta(hours=-1)))

    status, out, err = replay("--replay", str(path))

    assert status == EXIT_OK
    assert len(split_snapshots(out.splitlines())) == len(records)
    told = err.splitlines()
    assert [line.split(", line ")[1].split(":")[0] for line in told] == [
        str(number) for number in range(4, len(records) + 1)
    ]
    assert all("was the clock set back" in line for line in told)


@pytest.mark.parametrize(
    ("fail_on", "expected"), [("warning", EXIT_FINDINGS), ("error", EXIT_FINDINGS), (None, EXIT_OK)]
)
def test_fail_on_tells_the_worst_finding_of_the_recording(
    fail_on: str | None, expected: int
) -> None:
    option = [] if fail_on is None else ["--fail-on", fail_on]

    assert replay("--replay", str(NOT_ANSWERING), "-q", *option) == (expected, "", "")


def test_fail_on_error_passes_a_recording_with_warnings_only() -> None:
    path = ROOT / "tests/monitor/data/findings/slow-callback.jsonl"
    status, out, _ = replay("--replay", str(path), "--fail-on", "error")

    assert "    warning: slow-callback: " in out
    assert "    error: " not in out
    assert status == EXIT_OK


def test_a_replay_records_the_polls_again(tmp_path: Path) -> None:
    """Recording a replay keeps every poll and writes this version's findings."""
    source = ROOT / "tests/demo/data/plain.jsonl"  # recorded without findings
    again = tmp_path / "again.jsonl"

    status, out, _ = replay("--replay", str(source), "-o", str(again))

    assert status == EXIT_OK
    assert read_polls(again) == read_polls(source)
    assert all("findings" in json.loads(line) for line in again.read_text().splitlines())
    assert replay("--replay", str(again))[1] == out


def test_the_recording_itself_is_not_written_over(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(NOT_ANSWERING.read_bytes())

    for option in (["-o", str(path)], ["-o", str(path), "-a"]):
        status, _, err = replay("--replay", str(path), *option)

        assert status == EXIT_USAGE
        assert f"-o {path} is the recording that --replay reads" in err
    assert path.read_bytes() == NOT_ANSWERING.read_bytes()


@pytest.mark.parametrize("recording", ["missing.jsonl", "empty.jsonl", "services"])
def test_a_recording_of_no_use_leaves_the_output_file_as_it_was(
    recording: str, tmp_path: Path
) -> None:
    """A typo in --replay must not cost the run recorded with -o before."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "services").write_text("ftp 21/tcp\nssh 22/tcp\n")
    kept = tmp_path / "run.jsonl"
    kept.write_bytes(NOT_ANSWERING.read_bytes())

    status, _, err = replay("--replay", str(tmp_path / recording), "-o", str(kept))

    assert status == EXIT_USAGE
    assert str(tmp_path / recording) in err
    assert kept.read_bytes() == NOT_ANSWERING.read_bytes()


def test_output_to_dash_replays_json_lines(tmp_path: Path) -> None:
    status, out, _ = replay("--replay", str(NOT_ANSWERING), "-o", "-")
    again = tmp_path / "again.jsonl"
    again.write_text(out)

    assert status == EXIT_OK
    assert read_polls(again) == read_polls(NOT_ANSWERING)
    made = [
        [finding.record() for finding in findings.active]
        for findings in findings_of(read_polls(NOT_ANSWERING))
    ]
    assert [json.loads(line)["findings"] for line in out.splitlines()] == made


def long_recording(tmp_path: Path) -> Path:
    """A recording whose replay fills any pipe many times over: copies of one, each a
    minute after the one before, so that time only goes forward."""
    records = [json.loads(line) for line in NOT_ANSWERING.read_text().splitlines()]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(moved(records, timedelta(minutes=copy)) for copy in range(300)))
    return path


def moved(records: list[dict[str, Any]], by: timedelta) -> str:
    """The lines of ``records`` with their times moved ``by``."""
    return "".join(
        json.dumps({**record, "time": (datetime.fromisoformat(record["time"]) + by).isoformat()})
        + "\n"
        for record in records
    )


def test_ctrl_c_during_a_long_replay_is_status_130(tmp_path: Path) -> None:
    """The replay blocks on a full pipe nobody reads once its first line is taken: it is
    still running whenever the signal comes."""
    process = subprocess.Popen(
        [*MONITOR, "--replay", str(long_recording(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline()  # under way
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=WAIT_SECONDS)
        assert process.stderr is not None
        assert (status, process.stderr.read()) == (EXIT_INTERRUPTED, "")
    finally:
        process.kill()
        process.communicate()


def test_a_reader_that_goes_away_is_status_1_without_a_traceback(tmp_path: Path) -> None:
    """As `| head` does."""
    process = subprocess.Popen(
        [*MONITOR, "--replay", str(long_recording(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline()
        process.stdout.close()
        status = process.wait(timeout=WAIT_SECONDS)
        assert process.stderr is not None
        assert (status, process.stderr.read()) == (EXIT_FAILED, b"")
    finally:
        process.kill()
        process.communicate()


@requires_pytango10
def test_a_replay_prints_what_the_live_run_printed(
    event_servers: EventServers, sandbox_servers: SandboxServers, tmp_path: Path
) -> None:
    """A live run with sampling, events flowing and a server that never answers (a
    finding at every snapshot) records its polls; replaying them prints the same text."""
    sandbox = event_servers.sandbox
    sandbox_servers.add_device("MonitorGone/1", "Counter", "test/monitor/gone")  # not started
    recording = tmp_path / "run.jsonl"
    done = threading.Event()

    def push() -> None:  # events between every two snapshots, until the run is over
        counter = sandbox.proxy(COUNTER)
        while not done.is_set():
            counter.Increment()

    pusher = threading.Thread(target=push)
    pusher.start()
    try:
        options = ["--monitor", "--count", "8", "-o", str(recording), *FAST]
        live = run_monitor([COUNTER, RELAY, "test/monitor/gone", *options], environment(sandbox))
    finally:
        done.set()
        pusher.join(WAIT_SECONDS)
    status, out, err = replay("--replay", str(recording))

    assert live.returncode == EXIT_OK, live.stderr
    assert "- Server performance" in live.stdout
    assert "- Client performance" in live.stdout
    assert "    error: server-not-answering: " in live.stdout
    assert (status, err) == (EXIT_OK, "")
    assert out == live.stdout
