"""Polls as JSON Lines: one object per poll, the layout other tools already read.

Each line is ``{"time": ISO-8601, "replies": {ADMIN: {"data": OBJECT} | {"error": TEXT}},
"findings": [FINDING, ...]}`` where the time is local, with its UTC offset; OBJECT is the
server's `QueryEventSystem` reply, decoded and encoded again: the same keys in the same
order and the same values, but not byte for byte (spacing, and escapes for characters
beyond ASCII, may differ); and each FINDING is an active finding of that poll as
`Finding.record` gives it.  Pure code, no Tango.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from types import TracebackType
from typing import Any

from milonga.monitor.findings import Findings
from milonga.monitor.poll import MonitoredServer, Poll, Reply

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
            replies[reply.server.admin] = {"data": reply.data}
        else:
            replies[reply.server.admin] = {"error": reply.error or "no reply"}
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


def read_polls(path: str | os.PathLike[str]) -> list[Poll]:
    """The polls of a JSON Lines file the monitor wrote (``-o FILE``), oldest first.

    Lines with and without ``"findings"`` are read alike: findings are not read back, as
    `milonga.monitor.findings.findings_of` makes them again from the polls.  Times are
    timezone-aware: a time without a UTC offset, as older versions wrote, is read as
    local time, so files of both kinds can be read, alone or mixed.  Empty lines are
    skipped, and so is a last line that has no newline and is not JSON: the monitor is
    still writing it.  Raises OSError if the file cannot be read, and `PollRecordError`
    naming the line if any other line is not such a poll.
    """
    polls = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                if not line.endswith("\n"):
                    break  # the last line, being written
                raise PollRecordError(_not_json(path, number, error)) from None
            try:
                polls.append(_poll_of(record))
            except (ValueError, TypeError, KeyError) as error:
                raise PollRecordError(
                    f"{path}, line {number}: {_why(error)}; each line must be a poll as "
                    f"{_WRITTEN_BY}: {_LAYOUT}"
                ) from None
    return polls


_WRITTEN_BY = "`tango-event-monitor -o FILE` writes it"
_LAYOUT = (
    '{"time": ISO-8601, "replies": {ADMIN: {"data": {...}} or {"error": "..."}}}; '
    "was the file written by something else?"
)


def _not_json(path: str | os.PathLike[str], number: int, error: ValueError) -> str:
    """Why line ``number`` of ``path``, which has a newline, is no poll: not JSON."""
    return (
        f"{path}, line {number}: it is not JSON ({error}): either the line was cut off (a "
        "monitor stopped while writing it, and another program appended after it) or it "
        f"is not a poll as {_WRITTEN_BY}; delete that line (for example with "
        f"sed -i '{number}d' FILE) to read the others"
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
    server = MonitoredServer(admin)
    if isinstance(reply, dict) and "data" in reply:
        return Reply.decoded(server, reply["data"])
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return Reply.failed(server, reply["error"])
    raise TypeError(f'the reply of {admin} has neither "data" nor an "error" text')


def _why(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"it has no {error.args[0]!r} key"
    return str(error)
