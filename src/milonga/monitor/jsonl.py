"""Polls as JSON Lines: one object per poll, the layout other tools already read.

Each line is ``{"time": ISO-8601, "replies": {ADMIN: {"data": OBJECT} | {"error": TEXT}}}``
where OBJECT is the server's `QueryEventSystem` reply as it sent it.  Pure code, no Tango.
"""

from __future__ import annotations

import json
import os
from types import TracebackType
from typing import Any

from milonga.monitor.poll import Poll


def poll_record(poll: Poll) -> str:
    """``poll`` as one line of JSON, without the newline; valid whatever the errors say."""
    replies: dict[str, Any] = {}
    for reply in poll.replies:
        if reply.data is not None:
            replies[reply.server.admin] = {"data": reply.data}
        else:
            replies[reply.server.admin] = {"error": reply.error or "no reply"}
    return json.dumps({"time": poll.time.isoformat(), "replies": replies})


class JsonLinesWriter:
    """Writes polls to a file, each line with one system call, before `write` returns.

    A reader following the file (``tail -f``) never sees part of a line, and a line is
    never held in a buffer when the monitor stops.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self._fd: int | None = os.open(path, flags, 0o666)

    def write(self, poll: Poll) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        line = memoryview((poll_record(poll) + "\n").encode())
        while line:
            line = line[os.write(self._fd, line) :]

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
