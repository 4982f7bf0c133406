"""From polls to what the monitor concludes: the one chain every consumer of polls runs.

`Analysis` takes polls one after the other, live (`PollLoop`, the in-process exporter) or
read back from a recording (``--replay``, `milonga report`), and turns each into a
`PollUpdate`: the poll, what changed since each server's previous answer (`PollHistory`)
and the findings (`Diagnostician`).  Pure code, no Tango.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from milonga.monitor.figures import StreamFigures
from milonga.monitor.findings import Diagnostician, Findings
from milonga.monitor.poll import Poll, PollHistory, PollReport


@dataclass(frozen=True)
class PollUpdate:
    """One poll, as every output gets it."""

    poll: Poll
    """The servers' replies."""
    report: PollReport
    """What changed in each server since its previous answer."""
    findings: Findings
    """What the monitor concludes from this poll and those before it."""
    streams: tuple[StreamFigures, ...] = ()
    """The figures of this poll's streams between two monitored servers, which the
    findings rest on (`Diagnostician.streams`)."""


class Analysis:
    """Turns each poll, given oldest first, into its `PollUpdate`.

    It keeps what comparing with earlier polls needs: each server's last answer and the
    findings' history.  Not thread-safe: give it one poll at a time.
    """

    def __init__(self) -> None:
        self._history = PollHistory()
        self._diagnostician = Diagnostician()

    def add(self, poll: Poll) -> PollUpdate:
        """The update of ``poll``, compared with the polls given before it."""
        report = self._history.add(poll)
        findings = self._diagnostician.add(report)
        return PollUpdate(poll, report, findings, self._diagnostician.streams)


def findings_of(polls: Iterable[Poll]) -> list[Findings]:
    """The findings of each of ``polls``, oldest first, as the monitor makes them."""
    analysis = Analysis()
    return [analysis.add(poll).findings for poll in polls]


__all__ = ["Analysis", "PollReport", "PollUpdate", "findings_of"]
