"""Polls as JSON Lines: one object per poll, the layout other tools already read.

Each line is ``{"time": ISO-8601, "replies": {ADMIN: {"data": OBJECT} | {"error": TEXT}},
"findings": [FINDING, ...]}`` where the time is local, with its UTC offset; OBJECT is the
server's `QueryEventSystem` reply, decoded and encoded again: the same keys in the same
order and the same values, but not byte for byte (spacing, and escapes for characters
beyond ASCII, may differ); and each FINDING is an active finding of that poll as
`Finding.record` gives it.  A reply also has ``"devices": [NAME, ...]`` after its data or
error when devices named on the command line led to its server, so that a replay labels
the server as the live run did.  Pure code, no Tango.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple

from milonga.monitor.findings import Findings
from milonga.monitor.poll import MonitoredServer, Poll, Reply
from milonga.monitor.snapshot import SUPPORTED_VERSION

NEWLINE = b"\n"


def poll_record(poll: Poll, findings: Findings | None = None) -> str:
    """``poll`` as one line of JSON, without the newline; valid whatever the errors say.

    ``"findings"`` comes last and holds the active ones of ``findings``, the findings of
    that poll: an empty list when none hold, or none are given.  Cleared findings are left
    out: a reader sees them as no longer there.
    """
    replies: dict[str, Any] = {}
    for reply in poll.replies:
        if reply.data is not None:
            record: dict[str, Any] = {"data": reply.data}
        else:
            record = {"error": reply.error or "no reply"}
        if reply.server.devices:
            record["devices"] = list(reply.server.devices)
        replies[reply.server.admin] = record
    active = () if findings is None else findings.active
    return json.dumps(
        {
            "time": poll.time.isoformat(),
            "replies": replies,
            "findings": [finding.record() for finding in active],
        }
    )


class JsonLinesWriter:
    """Writes polls to a file, each line with one system call, before `write` returns.

    A reader following the file (``tail -f``) never sees part of a line, and a line is
    never held in a buffer when the monitor stops.  A line that cannot be written whole
    (a full disk, a file-size limit) is cut off again, so a regular file only ever holds
    whole lines.  With ``append``, a file that does not end with a newline (left so by
    another program) gets one before the first line.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        """Open ``path``, emptied unless ``append``; raises OSError if that fails."""
        self.path = path
        # Always O_APPEND: every line goes to the end, where a failed one is cut off.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self._fd: int | None = os.open(path, flags, 0o666)
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._prefix = NEWLINE if append and self._regular and not _ends_a_line(path) else b""

    def write(self, poll: Poll, findings: Findings | None = None) -> None:
        """Add the line of ``poll`` and its ``findings`` (see `poll_record`); raises
        OSError, with the file as it was, if it fails."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        line = poll_record(poll, findings) + "\n"
        self._write_whole(self._fd, self._prefix + line.encode())
        self._prefix = b""

    def _write_whole(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` at the end of the file, or, on a regular file, none of it.

        Several programs may append to one file (``-a``).  A part written before a failure
        is cut off only while it is still the end of the file; once another program has
        appended after it, cutting would take that program's lines too, so the part stays
        and the error says so.  (One that appends between that check and the cut still
        loses its line: the two steps are not one system call.)
        """
        start = os.fstat(fd).st_size if self._regular else None
        written = 0
        try:
            while written < len(data):  # more than one write only near a limit
                written += os.write(fd, data[written:])
        except OSError as error:
            if start is not None and written:
                _cut_off(fd, start, written, error)
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _ends_a_line(path: str | os.PathLike[str]) -> bool:
    """Whether the regular file at ``path`` is empty or ends with a newline; True if it
    cannot be read (no permission), as nothing can be done about it then."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            return size == 0 or os.pread(file.fileno(), 1, size - 1) == NEWLINE
    except OSError:
        return True


def _cut_off(fd: int, start: int, written: int, error: OSError) -> None:
    """Cut the ``written`` bytes at ``start`` off the file again if nothing follows them;
    otherwise add to ``error`` that they were left."""
    try:
        if os.fstat(fd).st_size == start + written:
            os.ftruncate(fd, start)
            return
    except OSError:
        return  # the write's error is the one to tell
    error.strerror = (
        f"{error.strerror}; another program wrote to the file after the {written} bytes "
        "of this line that went in, so they were left there as an incomplete line"
    )


class PollRecordError(ValueError):
    """A line of a JSON Lines file is not a poll as `poll_record` writes it."""


class RecordProblem(NamedTuple):
    """Something `iter_polls` could not read in a recording, and went on past."""

    line: int
    """The line it is on, counting from 1; 0 when it is about the whole file."""
    message: str
    """Complete sentences naming the file and line, what is wrong, what was expected
    and what to do."""


ProblemHandler = Callable[[RecordProblem], None]


def read_polls(path: str | os.PathLike[str]) -> list[Poll]:
    """The polls of a JSON Lines file the monitor wrote (``-o FILE``), oldest first.

    `iter_polls` without a problem handler, as a list: raises OSError if the file cannot
    be read, and `PollRecordError` naming the line if a line is not a poll.
    """
    return list(iter_polls(path))


def iter_polls(
    path: str | os.PathLike[str], *, problems: ProblemHandler | None = None
) -> Iterator[Poll]:
    """The polls of a JSON Lines file the monitor wrote (``-o FILE``), oldest first, one
    line at a time, so that a file of any length is read in little memory.

    Lines with and without ``"findings"`` are read alike: findings are not read back, as
    `milonga.monitor.analysis.Analysis` makes them again from the polls.  Times are
    timezone-aware: a time without a UTC offset, as older versions wrote, is read as
    local time, so files of both kinds can be read, alone or mixed.  Empty lines are
    skipped, and so is a UTF-8 byte order mark at the start of a line; a line may end
    with CR LF.  A reply whose `QueryEventSystem` data milonga cannot read (another
    version, another tool's layout) is kept as an error reply: that server did not
    answer usably.  A poll is yielded as recorded even when its time is not later than
    that of every poll before it.

    Without ``problems`` (strict): a last line that has no newline and is not JSON is
    left out, as the monitor is still writing it; any other line that is not a poll
    raises `PollRecordError` naming it.  With ``problems`` (lenient): each line that is
    not a poll, a cut-off last line included, is given to ``problems`` as a
    `RecordProblem` and skipped, and reading goes on; so is each poll whose time is not
    later than the latest before it (a clock set back).  Each of those two kinds is told
    for its first `TOLD_LINES` lines, then counted, with one `RecordProblem` at the end
    giving the count.  Each unreadable reply is told once per server and kind of
    problem, with one `RecordProblem` at the end counting the further lines that had
    one.  The problems of lines before the first poll are told once that poll is read;
    if the first `TOLD_LINES` lines that are not empty are no poll, reading stops with
    a `PollRecordError` saying that the file is no recording, even with ``problems``.
    Raises OSError if the file cannot be read.
    """
    reader = _Reader(path, problems)
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            poll = reader.poll_of(number, line)
            if poll is not None:
                yield poll
    reader.finish()


TOLD_LINES = 20
"""How many lines with one kind of problem `iter_polls` tells one by one; the rest are
counted.  Also how many lines that are no poll make a file no recording, when no poll
comes before them."""


class _Capped:
    """The lines of one kind of problem: the first `TOLD_LINES` told, the others counted."""

    def __init__(self, summary: Callable[[int], str]) -> None:
        self.summary = summary
        """The message counting the lines not told, from their number."""
        self.told = 0
        self.more = 0

    def tell(self, problem: RecordProblem, problems: ProblemHandler) -> None:
        """Give ``problem`` to ``problems``, or count it once `TOLD_LINES` have been."""
        if self.told < TOLD_LINES:
            self.told += 1
            problems(problem)
        else:
            self.more += 1

    def finish(self, problems: ProblemHandler) -> None:
        """Tell how many lines were counted rather than told, if any."""
        if self.more:
            problems(RecordProblem(0, self.summary(self.more)))


class _Reader:
    """What `iter_polls` knows between lines: where to report problems, and which reply
    problems it has reported already."""

    def __init__(self, path: str | os.PathLike[str], problems: ProblemHandler | None) -> None:
        self.path = path
        self.problems = problems
        self.told: set[tuple[str, str | None]] = set()  # (server, error) reported
        self.repeated = 0  # lines with only reply problems reported before them
        self.latest: tuple[datetime, int] | None = None  # the latest poll's time and line
        self.before: list[RecordProblem] | None = []  # held until the first poll; then None
        self.unreadable = _Capped(
            lambda more: (
                f"{path}: {more} more line{_s(more)} could not be read either, "
                "and were skipped as those above."
            )
        )
        self.backwards = _Capped(
            lambda more: (
                f"{path}: {more} more poll{_s(more)} had a time that is not later "
                "than that of a poll before them, as those above."
            )
        )

    def poll_of(self, number: int, line: bytes) -> Poll | None:
        """The poll of line ``number``; None if it is empty, or is no poll and problems
        are reported rather than raised."""
        if not line.strip():
            return None
        try:
            record = json.loads(line.decode("utf-8-sig"))
        except ValueError as error:
            if not line.endswith(NEWLINE):
                self._unreadable(number, _cut_off_last(self.path, number))
                return None
            self._fail(number, _not_json(self.path, number, error, self._remedy(number)))
            return None
        try:
            poll = _poll_of(record)
        except (ValueError, TypeError, KeyError) as error:
            self._fail(
                number,
                f"{self.path}, line {number}: {_why(error)}; each line must be a poll as "
                f"{_WRITTEN_BY}: {_LAYOUT} {self._remedy(number)}",
            )
            return None
        if self.problems is not None:
            self._first_poll()
            self._check_time(number, poll)
            self._check_replies(number, record["replies"], poll)
        return poll

    def finish(self) -> None:
        """Tell the problems still held (a file with no poll), and how many more lines
        had problems of each kind told before."""
        if self.problems is None:
            return
        self._first_poll()
        self.unreadable.finish(self.problems)
        self.backwards.finish(self.problems)
        if self.repeated:
            self.problems(
                RecordProblem(
                    0,
                    f"{self.path}: the QueryEventSystem replies reported above cannot be "
                    f"read in {self.repeated} more line{_s(self.repeated)} either; those "
                    "servers count as not answering there.",
                )
            )

    def _first_poll(self) -> None:
        """Tell the problems held back until a poll was read, or the file ended."""
        if self.before is not None and self.problems is not None:
            held, self.before = self.before, None
            for problem in held:
                self.unreadable.tell(problem, self.problems)

    def _check_time(self, number: int, poll: Poll) -> None:
        """Tell if ``poll``, on line ``number``, is not later than the latest poll before
        it; otherwise it is the latest."""
        latest = self.latest
        if latest is None or poll.time > latest[0]:
            self.latest = (poll.time, number)
            return
        assert self.problems is not None
        when, where = latest
        self.backwards.tell(
            RecordProblem(
                number,
                f"{self.path}, line {number}: the poll's time, {poll.time.isoformat()}, is "
                f"not later than {when.isoformat()}, the time of line {where}, a poll "
                "before it: was the clock set back, or were lines moved? Its poll is read "
                "as recorded; a report leaves it out of its figures, which only go forward "
                "in time.",
            ),
            self.problems,
        )

    def _check_replies(self, number: int, raw: dict[str, Any], poll: Poll) -> None:
        """Report each reply of ``poll`` whose data could not be read, the first time its
        server has that problem; count the line if it has such replies and none of them
        was reported here."""
        unreadable = [
            reply
            for reply in poll.replies
            if reply.snapshot is None and "data" in raw[reply.server.admin]
        ]
        new = [reply for reply in unreadable if (reply.server.admin, reply.error) not in self.told]
        self.repeated += bool(unreadable) and not new
        for reply in new:
            self.told.add((reply.server.admin, reply.error))
            self._tell(
                number,
                f"{self.path}, line {number}: the reply of {reply.server.admin} is not "
                f"QueryEventSystem data of version {SUPPORTED_VERSION}, as cppTango 10 "
                f"gives it ({reply.error}). Was it recorded by another tool, such as SKA's "
                "ska-tango-event-monitor on its patched PyTango 9.5? That server counts as "
                "not answering in such lines, and the rest is read; record with this "
                "milonga's tango-event-monitor -o FILE to read it all.",
            )

    def _fail(self, number: int, message: str) -> None:
        """Raise ``message`` as a `PollRecordError`, or report it if problems are."""
        if self.problems is None:
            raise PollRecordError(message)
        self._unreadable(number, message)

    def _unreadable(self, number: int, message: str) -> None:
        """Report that line ``number`` is skipped, for ``message``; before the first poll,
        hold it back, and raise `PollRecordError` once `TOLD_LINES` are held."""
        if self.problems is None:
            return
        problem = RecordProblem(number, message)
        if self.before is None:
            self.unreadable.tell(problem, self.problems)
            return
        self.before.append(problem)
        if len(self.before) >= TOLD_LINES:
            raise PollRecordError(
                f"{self.path} does not look like a recording of tango-event-monitor -o: its "
                f"first {number} lines are not polls, which are JSON objects such as "
                f"{_LAYOUT} Give the JSON Lines file that tango-event-monitor -o FILE wrote."
            )

    def _tell(self, number: int, message: str) -> None:
        if self.problems is not None:
            self.problems(RecordProblem(number, message))

    def _remedy(self, number: int) -> str:
        """What to do about line ``number``, which is no poll."""
        if self.problems is None:
            return (
                f"Delete that line (for example with sed -i '{number}d' FILE) to read the others."
            )
        return "The line is skipped and the others are read."


_WRITTEN_BY = "`tango-event-monitor -o FILE` writes it"
_LAYOUT = (
    '{"time": ISO-8601, "replies": {ADMIN: {"data": {...}} or {"error": "..."}}}. '
    "Was the file written by something else?"
)


def _not_json(path: str | os.PathLike[str], number: int, error: ValueError, remedy: str) -> str:
    """Why line ``number`` of ``path``, which has a newline, is no poll: not JSON."""
    return (
        f"{path}, line {number}: it is not JSON ({error}): either the line was cut off (a "
        "monitor stopped while writing it, and another program appended after it) or it "
        f"is not a poll as {_WRITTEN_BY}. {remedy}"
    )


def _cut_off_last(path: str | os.PathLike[str], number: int) -> str:
    """Why the last line ``number`` of ``path``, which has no newline, is left out."""
    return (
        f"{path}, line {number}: the last line is cut off (no newline, and not JSON): a "
        "monitor is still writing it, or stopped while writing it; it is left out, and "
        "reading it again once the monitor has finished the line takes it in."
    )


def _poll_of(record: Any) -> Poll:
    """The poll of one decoded line; raises ValueError, TypeError or KeyError if it is not
    one."""
    if not isinstance(record, dict):
        raise TypeError("the line is not a JSON object")
    time = datetime.fromisoformat(record["time"])
    replies = record["replies"]
    if not isinstance(replies, dict):
        raise TypeError('"replies" is not a JSON object')
    return Poll(
        time if time.tzinfo is not None else time.astimezone(),
        tuple(_reply_of(admin, reply) for admin, reply in replies.items()),
    )


def _reply_of(admin: str, reply: Any) -> Reply:
    server = MonitoredServer(admin, _devices_of(admin, reply))
    if isinstance(reply, dict) and "data" in reply:
        return Reply.decoded(server, reply["data"])
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return Reply.failed(server, reply["error"])
    raise TypeError(f'the reply of {admin} has neither "data" nor an "error" text')


def _devices_of(admin: str, reply: Any) -> tuple[str, ...]:
    """The devices that led to the server of ``admin``, as its ``reply`` names them."""
    devices = reply.get("devices", []) if isinstance(reply, dict) else []
    if not isinstance(devices, list) or not all(isinstance(name, str) for name in devices):
        raise TypeError(f'the "devices" of the reply of {admin} are not a list of names')
    return tuple(devices)


def _s(count: int) -> str:
    """The plural ending for ``count`` things."""
    return "" if count == 1 else "s"


def _why(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"it has no {error.args[0]!r} key"
    return str(error)
