"""A poll: every monitored server's reply at one moment, and what changed since the last.

`Poll` is what the collector returns.  `PollHistory` remembers each server's last answer
and turns each new poll into a `PollReport`: one `ServerEntry` per server, with its
`Report`, or the reason it did not answer.  `Cadence` says when to take each poll.  Pure
code, no Tango.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from milonga.monitor.diff import UNSAMPLED, Report, Unsampled, diff
from milonga.monitor.snapshot import Snapshot, SnapshotFormatError, parse_snapshot


@dataclass(frozen=True)
class MonitoredServer:
    """A device server to poll, through its admin device, and the devices that led to it."""

    admin: str
    """The admin device, ``dserver/Executable/instance``, or its full TRL."""
    devices: tuple[str, ...] = ()
    """The devices named on the command line that live in this server."""

    @property
    def label(self) -> str:
        """``dserver/MyServer/top (from foo/bar/top, foo/bar/top2)``, or just the admin."""
        if not self.devices:
            return self.admin
        return f"{self.admin} (from {', '.join(self.devices)})"


@dataclass(frozen=True)
class Reply:
    """One server's answer to one poll: a snapshot, or why there is none."""

    server: MonitoredServer
    data: Mapping[str, Any] | None
    """The decoded `QueryEventSystem` object, as the server sent it."""
    snapshot: Snapshot | None
    error: str | None
    """Why there is no snapshot: one cause per line, the root cause first."""

    @classmethod
    def answered(cls, server: MonitoredServer, text: str) -> Reply:
        """The reply for ``text`` returned by the server; an error reply if it is unusable."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            return cls.failed(
                server, f"QueryEventSystem returned something that is not JSON: {error}"
            )
        return cls.decoded(server, data)

    @classmethod
    def decoded(cls, server: MonitoredServer, data: Any) -> Reply:
        """The reply for ``data``, the server's reply decoded from JSON; an error reply if
        it is unusable."""
        if type(data) is not dict and not isinstance(data, Mapping):  # dict: told quicker
            return cls.failed(server, "QueryEventSystem returned JSON that is not an object")
        try:
            return cls(server, data, parse_snapshot(data), None)
        except SnapshotFormatError as error:
            return cls(server, data, None, f"cannot read its QueryEventSystem reply: {error}")

    @classmethod
    def failed(cls, server: MonitoredServer, error: str) -> Reply:
        """The reply of a server that could not be queried."""
        return cls(server, None, None, error)


@dataclass(frozen=True)
class Poll:
    """Every monitored server's reply, collected at the same time."""

    time: datetime
    """When the poll started."""
    replies: tuple[Reply, ...]


class ServerEntry(NamedTuple):
    """One server in a poll report.

    A named tuple rather than a frozen dataclass, as `Report`: every poll makes one per
    server.
    """

    server: MonitoredServer
    report: Report | None
    """What changed since its previous answer; None when it did not answer."""
    error: str | None = None
    """Why it did not answer this time."""
    silent_polls: int = 0
    """When it answers again: how many polls in a row it had not answered."""
    last_answer: datetime | None = None
    """The time of the poll its report is compared with: its previous answer; None for
    its first answer, and when it did not answer."""
    snapshot: Snapshot | None = None
    """Its answer to this poll; None when it did not answer."""
    unsampled: Unsampled = UNSAMPLED
    """Which of its sides had taken no sample since sampling was turned on, as of its
    previous answer: the first sample of such a side in `snapshot` has no real gap."""


@dataclass(frozen=True)
class PollReport:
    """What changed in every monitored server since the previous poll."""

    time: datetime
    """When the poll started, with a UTC offset (`PollHistory.add`)."""
    entries: tuple[ServerEntry, ...]


class PollHistory:
    """Each server's last answer, so that every poll is compared with what came before.

    A server that does not answer keeps its last snapshot: when it answers again its
    report shows everything since that answer, such as counters that went down because
    it restarted.  It also remembers which sides of each server have taken no sample
    since sampling was turned on (`Unsampled`), however many polls that takes.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[datetime, Snapshot]] = {}
        self._silent: dict[str, int] = {}
        self._unsampled: dict[str, Unsampled] = {}

    def add(self, poll: Poll) -> PollReport:
        """Record ``poll`` and return what changed since each server's previous answer.

        Every time in the report has a UTC offset, so that any two compare: a poll time
        without one (as older records have) is taken as local time.
        """
        time = poll.time if poll.time.utcoffset() is not None else poll.time.astimezone()
        return PollReport(time, tuple(self._entry(time, reply) for reply in poll.replies))

    def _entry(self, time: datetime, reply: Reply) -> ServerEntry:
        admin = reply.server.admin
        if reply.snapshot is None:
            self._silent[admin] = self._silent.get(admin, 0) + 1
            return ServerEntry(reply.server, None, error=reply.error or "no reply")
        last = self._last.get(admin)
        self._last[admin] = (time, reply.snapshot)
        silent = self._silent.pop(admin, 0)
        unsampled = self._unsampled.get(admin, UNSAMPLED)
        self._unsampled[admin] = unsampled.after(reply.snapshot)
        return ServerEntry(
            reply.server,
            diff(last[1] if last else None, reply.snapshot, unsampled),
            silent_polls=silent,
            last_answer=last[0] if last else None,
            snapshot=reply.snapshot,
            unsampled=unsampled,
        )


RESOLVE_SECONDS = 60.0
"""How often the poll loop looks again for the servers to poll, when it is told how."""


class NextPoll(NamedTuple):
    """When to take the next poll, as `Cadence.next` says."""

    wait: float
    """Seconds from now."""
    late: float
    """Seconds between when it was due and when it is taken: 0.0 unless the poll before
    it ended after it was due."""


class Cadence:
    """When to take polls: every ``period`` seconds from ``start``, on one grid.

    Times are `time.monotonic` seconds.  A poll that ends after the next one was due makes
    that one late: it is taken at the next point of the grid instead, so that the polls
    stay evenly spaced, and `next` says how late it is.
    """

    def __init__(self, period: float, start: float) -> None:
        self.period = period
        self.start = start
        self._index = 0  # of the poll under way, due at start + index * period

    @property
    def due(self) -> float:
        """When the poll under way was due: later polls end more than ``period`` after
        this when `next` says they are late."""
        return self.start + self._index * self.period

    def next(self, now: float) -> NextPoll:
        """When to take the poll after the one under way, which ended at ``now``."""
        due = self._index + 1
        self._index = max(due, math.ceil((now - self.start) / self.period))
        return NextPoll(
            wait=max(0.0, self.due - now),
            late=(self._index - due) * self.period,
        )
