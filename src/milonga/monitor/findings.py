"""Findings: what the monitor concludes from its polls, for people and for machines.

A `Finding` names a problem of one server, or of one stream in it, with a `Severity`, a
message that says what is happening, what it means and what to do, and the figures it
rests on.  `Findings` are those of one poll: the ones that hold, and those that held at
the poll before and no longer do.  The rules that make them are in
`milonga.monitor.rules`.  Pure code, no Tango.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Evidence = Mapping[str, int | float | str | None]
"""A finding's figures by name; durations in μs and seconds say so in their names."""


class Severity(enum.IntEnum):
    """How bad a finding is; a greater value is worse."""

    INFO = 1
    """Worth knowing; nothing is wrong yet."""
    WARNING = 2
    """Events are late, or will be lost if it goes on."""
    ERROR = 3
    """Events were lost, or a server cannot be watched."""

    @property
    def label(self) -> str:
        """``info``, ``warning`` or ``error``: the name in text and JSON."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Severity:
        """The severity called ``label``; raises ValueError naming the choices."""
        try:
            return cls[label.upper()]
        except KeyError:
            choices = ", ".join(severity.label for severity in cls)
            raise ValueError(f"expected a severity ({choices}), got {label!r}") from None


@dataclass(frozen=True, order=True)
class Subject:
    """What a finding is about: a server, and the stream or topic in it if there is one."""

    server: str
    """The admin device of the server, as the monitor names it."""
    stream: str | None = None
    """``device/attribute.kind`` without the ``tango://host:port/`` prefix."""

    def __str__(self) -> str:
        return self.server if self.stream is None else f"{self.server}: {self.stream}"

    def record(self) -> dict[str, str | None]:
        """As JSON: ``{"server": ..., "stream": ... or null}``."""
        return {"server": self.server, "stream": self.stream}


@dataclass(frozen=True)
class Finding:
    """One conclusion about one subject, at one poll."""

    kind: str
    """A stable identifier, such as ``slow-callback``: see docs/findings.md."""
    severity: Severity
    subject: Subject
    message: str
    """One or two sentences: what happens, what it means, what to do, with its figures."""
    evidence: Evidence
    """The figures of the message, as numbers."""

    @property
    def key(self) -> tuple[str, Subject]:
        """What identifies the finding from one poll to the next."""
        return (self.kind, self.subject)

    def record(self) -> dict[str, Any]:
        """As JSON: kind, severity (its label), subject, message and evidence."""
        return {
            "kind": self.kind,
            "severity": self.severity.label,
            "subject": self.subject.record(),
            "message": self.message,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Cleared:
    """A finding that held at the poll before and no longer does."""

    finding: Finding
    """The finding as it was last seen."""
    since: datetime
    """The first poll of the run of polls at which it held."""
    polls: int
    """How many polls in a row it held."""


@dataclass(frozen=True)
class Findings:
    """The findings of one poll."""

    time: datetime
    """The poll's time."""
    active: tuple[Finding, ...] = ()
    """Those that hold, worst first, then by subject and kind."""
    cleared: tuple[Cleared, ...] = ()
    """Those that held at the poll before and no longer do."""

    @property
    def worst(self) -> Severity | None:
        """The severity of the worst active finding; None if there is none."""
        return max((finding.severity for finding in self.active), default=None)

    def of_server(self, server: str) -> Findings:
        """Only those about admin device ``server``."""
        return Findings(
            self.time,
            tuple(f for f in self.active if f.subject.server == server),
            tuple(c for c in self.cleared if c.finding.subject.server == server),
        )
