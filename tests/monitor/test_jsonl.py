"""The JSON Lines file keeps whole lines only: on a full disk, over a file-size limit, and
when appending to a file someone else left without a final newline."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milonga.monitor import (
    JsonLinesWriter,
    MonitoredServer,
    Poll,
    RecordProblem,
    Reply,
    iter_polls,
    poll_record,
)
from milonga.monitor.analysis import findings_of
from milonga.monitor.findings import Cleared, Finding, Findings, Severity, Subject
from milonga.monitor.jsonl import TOLD_LINES, PollRecordError, read_polls
from tests.monitor.data import TANGO_HOST

SERVER = MonitoredServer("dserver/MonitorPub/1")
TIME = datetime(2026, 3, 17)
ROOT = Path(__file__).parents[2]
WAIT_SECONDS = 60.0


def line_of(size: int) -> Poll:
    """A poll whose JSON line, newline included, is ``size`` bytes long."""
    one = poll_record(Poll(TIME, (Reply.failed(SERVER, "x"),)))  # size - 1 without newline
    return Poll(TIME, (Reply.failed(SERVER, "x" * (size - len(one))),))


def test_line_of_makes_lines_of_that_size() -> None:
    assert len(poll_record(line_of(300))) + 1 == 300


# Run in a process of its own: the file-size limit holds for the whole process.
OVER_THE_LIMIT = textwrap.dedent(
    """\
    import errno, resource, sys
    from tests.monitor.test_jsonl import line_of
    from milonga.monitor import JsonLinesWriter

    path, limit = sys.argv[1], int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ
    with JsonLinesWriter(path, append=True) as writer:
        writer.write(line_of(300))
        try:
            writer.write(line_of(300))  # half of it fits below the limit
        except OSError as error:
            print(errno.errorcode[error.errno])
    """
)


def test_a_line_over_the_file_size_limit_is_cut_off_again(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"

    result = subprocess.run(
        [sys.executable, "-c", OVER_THE_LIMIT, str(path), "450"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "EFBIG"
    assert path.read_text() == poll_record(line_of(300)) + "\n"


def test_a_full_device_takes_nothing_and_says_why() -> None:
    with (
        JsonLinesWriter("/dev/full", append=True) as writer,
        pytest.raises(OSError, match="No space left") as raised,
    ):
        writer.write(line_of(300))

    assert raised.value.errno == errno.ENOSPC


def test_appending_starts_on_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text('{"time": "cut off by another program')
    poll = line_of(300)

    with JsonLinesWriter(path, append=True) as writer:
        writer.write(poll)
        writer.write(poll)

    lines = path.read_text().splitlines()
    assert lines[0] == '{"time": "cut off by another program'
    assert [json.loads(line) for line in lines[1:]] == [json.loads(poll_record(poll))] * 2
    assert path.read_text().endswith("\n")


@pytest.mark.parametrize("text", ["", "{}\n"])
def test_appending_to_whole_lines_adds_no_blank_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text(text)

    with JsonLinesWriter(path, append=True) as writer:
        writer.write(line_of(300))

    assert path.read_text() == text + poll_record(line_of(300)) + "\n"


def test_a_reply_is_kept_as_decoded_not_byte_for_byte() -> None:
    """What docs/monitor.md says about `data`: same keys, order and values."""
    sent = f'{{"version":1, "server":{{"event_counters":{{"tango://{TANGO_HOST}/a/b/c/é.change":3}}}}}}'
    reply = Reply.answered(SERVER, sent)

    line = poll_record(Poll(TIME, (reply,)))

    kept = json.loads(line)["replies"][SERVER.admin]["data"]
    assert kept == json.loads(sent)
    assert list(kept) == ["version", "server"]
    assert sent not in line  # spacing and the é differ
    assert "\\u00e9" in line


def test_a_failed_line_is_left_when_another_writer_appended_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cutting a failed line off again must not take another writer's line with it."""
    path = tmp_path / "polls.jsonl"
    path.write_text("{}\n")
    theirs = b'{"time": "another monitor"}\n'
    real_write = os.write
    writes = 0

    def half_then_full_disk(fd: int, data: bytes) -> int:
        """Our line: half of it goes in, another writer appends, then the disk is full."""
        nonlocal writes
        writes += 1
        if writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, data[: len(data) // 2])
        other = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            real_write(other, theirs)
        finally:
            os.close(other)
        return written

    with JsonLinesWriter(path, append=True) as writer:
        monkeypatch.setattr(os, "write", half_then_full_disk)
        with pytest.raises(OSError, match="another program wrote to the file") as raised:
            writer.write(line_of(300))
        monkeypatch.undo()

    assert path.read_bytes().endswith(theirs)
    assert raised.value.errno == errno.ENOSPC


SILENT = Finding(
    "server-not-answering",
    Severity.ERROR,
    Subject(SERVER.admin),
    "dserver/MonitorPub/1 did not answer 2 snapshots in a row: x",
    {"polls": 2},
)
LATE = Finding(
    "slow-callback",
    Severity.WARNING,
    Subject(SERVER.admin, "test/monitor/counter/value.change"),
    "slow",
    {"processing_median_us": 300000.0, "push_gap_us": 100000.0, "stream": "value"},
)


def test_findings_come_after_time_and_replies_which_stay_as_they_were() -> None:
    poll = Poll(TIME, (Reply.failed(SERVER, "x"),))
    findings = Findings(TIME, (SILENT,), (Cleared(LATE, since=TIME, polls=3),))

    record = json.loads(poll_record(poll, findings))

    assert list(record) == ["time", "replies", "findings"]
    assert record["time"] == "2026-03-17T00:00:00"
    assert record["replies"] == {"dserver/MonitorPub/1": {"error": "x"}}
    assert record["findings"] == [
        {
            "kind": "server-not-answering",
            "severity": "error",
            "subject": {"server": "dserver/MonitorPub/1", "stream": None},
            "message": "dserver/MonitorPub/1 did not answer 2 snapshots in a row: x",
            "evidence": {"polls": 2},
        }
    ], "cleared findings are left out"


def test_findings_are_an_empty_list_when_none_hold() -> None:
    poll = Poll(TIME, (Reply.failed(SERVER, "x"),))
    cleared = Findings(TIME, cleared=(Cleared(SILENT, since=TIME, polls=1),))

    assert json.loads(poll_record(poll))["findings"] == []
    assert json.loads(poll_record(poll, cleared))["findings"] == []


def test_the_writer_writes_the_findings_of_its_poll(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    poll = Poll(TIME, (Reply.failed(SERVER, "x"),))
    findings = Findings(TIME, (LATE, SILENT))

    with JsonLinesWriter(path) as writer:
        writer.write(poll, findings)

    assert path.read_text() == poll_record(poll, findings) + "\n"
    assert [f["kind"] for f in json.loads(path.read_text())["findings"]] == [
        "slow-callback",
        "server-not-answering",
    ]


# Reading a file back.

WHOLE = '{"time": "2026-03-17T12:00:00+01:00", "replies": {"dserver/a/1": {"error": "gone"}}}\n'


def whole_at(time: str) -> str:
    """The line of `WHOLE` at ``time`` instead."""
    return WHOLE.replace("2026-03-17T12:00:00+01:00", time)


def test_times_keep_their_utc_offset_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    time = datetime(2026, 3, 17, 12, tzinfo=timezone(timedelta(hours=1)))
    with JsonLinesWriter(path) as writer:
        writer.write(Poll(time, (Reply.failed(SERVER, "x"),)))

    assert json.loads(path.read_text())["time"] == "2026-03-17T12:00:00+01:00"
    assert [poll.time for poll in read_polls(path)] == [time]


def test_times_without_an_offset_are_read_as_local_time_even_mixed_with_others(
    tmp_path: Path,
) -> None:
    """Older files have times without a UTC offset; a file appended to by an older and a
    newer monitor has both, and its polls are still compared with each other."""
    path = tmp_path / "polls.jsonl"
    naive = datetime(2026, 3, 17, 11, 59, 59)
    path.write_text(
        f'{{"time": "{naive.isoformat()}", "replies": {{"dserver/a/1": {{"error": "gone"}}}}}}\n'
        + WHOLE
    )

    polls = read_polls(path)

    assert [poll.time for poll in polls] == [
        naive.astimezone(),
        datetime(2026, 3, 17, 12, tzinfo=timezone(timedelta(hours=1))),
    ]
    assert len(findings_of(polls)) == 2


def test_a_last_line_still_being_written_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text(WHOLE + WHOLE[:30])

    assert len(read_polls(path)) == 1


def test_a_cut_line_with_lines_after_it_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A monitor stopped in the middle of a line, and another appended after it."""
    path = tmp_path / "polls.jsonl"
    path.write_text(WHOLE + WHOLE[:30] + "\n" + WHOLE)

    with pytest.raises(PollRecordError) as raised:
        read_polls(path)

    message = str(raised.value)
    assert f"{path}, line 2: it is not JSON" in message
    assert "cut off" in message
    assert "sed -i '2d' FILE" in message


@pytest.mark.parametrize("last", ['{"time": "2026-03-17T12:00:00"}', "[]"])
def test_a_last_line_that_is_json_but_no_poll_is_an_error(tmp_path: Path, last: str) -> None:
    """Only a line that is not JSON yet can be one being written."""
    path = tmp_path / "polls.jsonl"
    path.write_text(WHOLE + last)

    with pytest.raises(PollRecordError, match=r"line 2: .*tango-event-monitor -o FILE"):
        read_polls(path)


# Reading leniently: every problem is told, and everything readable is read.

DEMO_PLAIN = ROOT / "tests/demo/data/plain.jsonl"
# A poll as SKA's ska-tango-event-monitor records it from its patched PyTango 9.5: no
# "version", and "perf_stats" where cppTango 10.3 has "perf".
SKA_DATA = {
    "server": {"event_counters": {"tango://h:1/a/b/c/x.change": 3}, "perf_stats": None},
    "client": {"event_callbacks": {}, "perf_stats": None},
}


def ska_line(time: str, *admins: str) -> str:
    replies = {admin: {"data": SKA_DATA} for admin in admins}
    return json.dumps({"time": time, "replies": replies}) + "\n"


def lenient(path: Path) -> tuple[list[Poll], list[RecordProblem]]:
    """The polls of ``path`` and the problems told while reading them."""
    problems: list[RecordProblem] = []
    return list(iter_polls(path, problems=problems.append)), problems


def test_an_empty_file_has_no_poll_and_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text("")

    assert lenient(path) == ([], [])


def test_a_truncated_last_line_is_told_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text(WHOLE + WHOLE[:30])

    polls, problems = lenient(path)

    assert len(polls) == 1
    ((line, message),) = problems
    assert line == 2
    assert f"{path}, line 2: the last line is cut off" in message
    assert "left out" in message


def test_lines_not_json_or_not_polls_are_told_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_bytes(
        (
            WHOLE
            + "{not json\n"
            + whole_at("2026-03-17T12:00:10+01:00")
            + '{"time": "2026-03-17T12:00:00"}\n'
        ).encode()
        + b"\xff\xfe binary\n"
        + whole_at("2026-03-17T12:00:20+01:00").encode()
    )

    polls, problems = lenient(path)

    assert len(polls) == 3
    assert [problem.line for problem in problems] == [2, 4, 5]
    assert f"{path}, line 2: it is not JSON" in problems[0].message
    assert f"{path}, line 4: it has no 'replies' key" in problems[1].message
    assert "tango-event-monitor -o FILE" in problems[1].message
    assert f"{path}, line 5: it is not JSON" in problems[2].message
    assert all("skipped and the others are read" in problem.message for problem in problems)


def test_strict_reading_names_a_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_bytes(WHOLE.encode() + b"\xff\xfe\n" + WHOLE.encode())

    with pytest.raises(PollRecordError, match=r"line 2: it is not JSON.*sed -i '2d' FILE"):
        read_polls(path)


def test_a_recording_of_another_tool_is_told_once_per_server_and_counted(
    tmp_path: Path,
) -> None:
    """SKA's tool records the same keys, but its patched PyTango 9.5 replies are not
    QueryEventSystem version 1: each server is told once, with its first line, then one
    count of the lines after; the replies stay, as errors, and so does the poll."""
    path = tmp_path / "ska.jsonl"
    path.write_text(
        ska_line("2025-03-01T10:00:00", "dserver/a/1")
        + whole_at("2025-03-01T10:00:05")
        + ska_line("2025-03-01T10:00:10", "dserver/a/1", "dserver/b/1")
        + ska_line("2025-03-01T10:00:20", "dserver/a/1", "dserver/b/1")
        + ska_line("2025-03-01T10:00:30", "dserver/b/1")
    )

    polls, problems = lenient(path)

    assert len(polls) == 5
    assert all(reply.snapshot is None for poll in polls for reply in poll.replies)
    assert "version None" in (polls[0].replies[0].error or "")
    assert [problem.line for problem in problems] == [1, 3, 0]
    assert "line 1: the reply of dserver/a/1 is not QueryEventSystem data of version 1" in (
        problems[0].message
    )
    assert "SKA" in problems[0].message
    assert "line 3: the reply of dserver/b/1" in problems[1].message
    assert "in 2 more lines either" in problems[2].message
    assert read_polls(path) == polls  # strict reading keeps them as errors too


def test_the_same_layout_from_another_version_is_told(tmp_path: Path) -> None:
    path = tmp_path / "v2.jsonl"
    data = {"version": 2, "server": None, "client": None}
    path.write_text(
        json.dumps({"time": "2026-03-17T12:00:00", "replies": {"dserver/a/1": {"data": data}}})
        + "\n"
    )

    (poll,), ((line, message),) = lenient(path)

    assert poll.replies[0].snapshot is None
    assert line == 1
    assert "version 2 but milonga reads version 1" in message


garbage = st.binary(max_size=40).filter(lambda line: b"\n" not in line)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(garbage, max_size=3), min_size=11, max_size=11),
    garbage,
)
def test_every_good_line_is_read_whatever_garbage_is_between(
    tmp_path_factory: pytest.TempPathFactory, between: list[list[bytes]], last: bytes
) -> None:
    good = DEMO_PLAIN.read_bytes().splitlines(keepends=True)
    text = b"".join(
        b"".join(line + b"\n" for line in junk) + poll
        for junk, poll in zip(between, [*good, b""], strict=True)
    )
    path = tmp_path_factory.mktemp("garbage") / "polls.jsonl"
    path.write_bytes(text + last)

    polls, problems = lenient(path)

    assert polls == read_polls(DEMO_PLAIN)
    bad = sum(bool(line.strip()) for junk in between for line in junk) + bool(last.strip())
    assert len(problems) == min(bad, TOLD_LINES) + (bad > TOLD_LINES)


def test_the_devices_that_led_to_a_server_come_back(tmp_path: Path) -> None:
    """The live monitor labels a server with the devices named on the command line; a
    replay labels it the same way."""
    path = tmp_path / "polls.jsonl"
    named = MonitoredServer("dserver/MonitorPub/2", ("test/monitor/counter", "a/b/c"))
    with JsonLinesWriter(path) as writer:
        writer.write(Poll(TIME, (Reply.failed(named, "x"), Reply.failed(SERVER, "y"))))

    (poll,) = read_polls(path)

    assert [reply.server for reply in poll.replies] == [named, SERVER]
    assert json.loads(path.read_text())["replies"]["dserver/MonitorPub/2"] == {
        "error": "x",
        "devices": ["test/monitor/counter", "a/b/c"],
    }


@pytest.mark.parametrize("devices", ['"a/b/c"', "[1]"])
def test_devices_that_are_not_a_list_of_names_are_named(tmp_path: Path, devices: str) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text(
        '{"time": "2026-03-17T12:00:00", "replies": {"dserver/a/1": {"error": "x", '
        f'"devices": {devices}}}}}}}\n'
    )

    with pytest.raises(PollRecordError, match=r'line 1: the "devices" of the reply of dserver/a/1'):
        read_polls(path)


def test_a_byte_order_mark_and_crlf_line_ends_lose_no_poll(tmp_path: Path) -> None:
    """As an editor on Windows saves a recording."""
    path = tmp_path / "polls.jsonl"
    lines = DEMO_PLAIN.read_bytes().splitlines()
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(line + b"\r\n" for line in lines))

    assert read_polls(path) == read_polls(DEMO_PLAIN)
    assert lenient(path) == (read_polls(DEMO_PLAIN), [])


@pytest.mark.parametrize(
    ("junk", "first"),
    [
        ("ftp 21/tcp\n", TOLD_LINES),
        ('{"time": "2026-03-17T12:00:00"}\n', TOLD_LINES),
        ("{not json\n\n", 2 * TOLD_LINES - 1),  # an empty line is not counted
    ],
)
def test_a_file_that_starts_with_no_poll_is_no_recording(
    tmp_path: Path, junk: str, first: int
) -> None:
    """One error, even when reading leniently, instead of a warning for each of its lines,
    however many polls come after them."""
    path = tmp_path / "services"
    path.write_text(junk * TOLD_LINES + WHOLE * 3)
    problems: list[RecordProblem] = []

    with pytest.raises(PollRecordError) as raised:
        list(iter_polls(path, problems=problems.append))

    assert str(raised.value).startswith(
        f"{path} does not look like a recording of tango-event-monitor -o: its first "
        f"{first} lines are not polls"
    )
    assert problems == []


def test_a_few_lines_before_the_first_poll_are_told_and_the_polls_read(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text("# a note\n" * (TOLD_LINES - 1) + WHOLE)

    polls, problems = lenient(path)

    assert len(polls) == 1
    assert [problem.line for problem in problems] == list(range(1, TOLD_LINES))


def test_a_file_of_a_few_lines_and_no_poll_tells_each(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text("ftp 21/tcp\nssh 22/tcp\n")

    assert [problem.line for problem in lenient(path)[1]] == [1, 2]


def test_many_bad_lines_are_told_up_to_a_limit_then_counted(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    path.write_text(WHOLE + "{not json\n" * (TOLD_LINES + 30) + whole_at("2026-03-17T13:00:00"))

    polls, problems = lenient(path)

    assert len(polls) == 2
    assert [problem.line for problem in problems] == [*range(2, TOLD_LINES + 2), 0]
    assert problems[-1].message == (
        f"{path}: 30 more lines could not be read either, and were skipped as those above."
    )


def test_polls_earlier_than_one_before_them_are_told_and_read(tmp_path: Path) -> None:
    """Lines 6 to 10 of the plain demo an hour earlier, as when a clock is set back."""
    records = [json.loads(line) for line in DEMO_PLAIN.read_text().splitlines()]
    for record in records[5:]:
        time = datetime.fromisoformat(record["time"])
        record["time"] = (time - timedelta(hours=1)).isoformat()
    path = tmp_path / "polls.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))

    polls, problems = lenient(path)

    assert polls == read_polls(path)
    assert len(polls) == len(records)
    assert [problem.line for problem in problems] == [6, 7, 8, 9, 10]
    line_5, line_6 = (polls[index].time.isoformat() for index in (4, 5))
    assert problems[0].message.startswith(
        f"{path}, line 6: the poll's time, {line_6}, is not later than {line_5}, the time "
        "of line 5, a poll before it: was the clock set back"
    )
    assert "the time of line 5" in problems[-1].message


def test_many_polls_earlier_than_one_before_them_are_counted(tmp_path: Path) -> None:
    """One wild time, far ahead: each poll after it is told, up to the limit."""
    wild = WHOLE.replace("2026-03-17T12:00:00+01:00", "9999-12-31T23:59:59+14:00")
    path = tmp_path / "polls.jsonl"
    path.write_text(WHOLE.replace("12:00:00", "11:00:00") + wild + WHOLE * (TOLD_LINES + 5))

    polls, problems = lenient(path)

    assert len(polls) == TOLD_LINES + 7
    assert len(problems) == TOLD_LINES + 1
    assert problems[-1] == RecordProblem(
        0,
        f"{path}: 5 more polls had a time that is not later than that of a poll before "
        "them, as those above.",
    )
