"""The diagnosis of a demo run, made by the monitor's own engine and nothing else.

The figures come from `milonga.monitor.figures` over the whole run (every query's
samples summarised together), the cause from the slow-callback rule of
`milonga.monitor.rules` applied to them, the lost-or-late verdict from the missed events
and lags the missed-events and falling-behind rules read, and the findings from the
monitor's loop, which made them poll by poll as the demo ran.  What is left here is what
only the demo's story needs: putting those together, and tallying the findings of the
run.  Pure code, no Tango.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from milonga.monitor import rules
from milonga.monitor.figures import Figures, StreamFigures, poll_figures, run_figures
from milonga.monitor.findings import Finding, Findings, Severity, Subject
from milonga.monitor.poll import PollReport


@dataclass(frozen=True)
class Raised:
    """A finding the monitor raised during a run, at one poll or more."""

    kind: str
    subject: Subject
    severity: Severity
    """The worst it had."""
    polls: int
    """At how many polls it held."""


def tally(findings: Iterable[Findings]) -> tuple[Raised, ...]:
    """The findings that held at any of ``findings`` (one per poll), in the order they
    were first raised."""
    held: dict[tuple[str, Subject], Raised] = {}
    for poll in findings:
        for finding in poll.active:
            before = held.get(finding.key)
            held[finding.key] = (
                Raised(finding.kind, finding.subject, finding.severity, 1)
                if before is None
                else Raised(
                    finding.kind,
                    finding.subject,
                    max(before.severity, finding.severity),
                    before.polls + 1,
                )
            )
    return tuple(held.values())


@dataclass(frozen=True)
class Diagnosis:
    """What the monitor tells about one demo run."""

    figures: Figures
    """The figures of the whole run."""
    raised: tuple[Raised, ...]
    """The findings the monitor raised while the run went on (`tally`)."""

    @property
    def polls(self) -> int:
        """How many polls the diagnosis comes from."""
        return self.figures.polls

    @property
    def streams(self) -> tuple[StreamFigures, ...]:
        return self.figures.streams

    @functools.cached_property
    def causes(self) -> tuple[Finding, ...]:
        """The slow-callback findings of the run: the rule the monitor applies at every
        poll, applied to the figures of the whole run."""
        found = (rules.slow_callback(stream) for stream in self.streams)
        return tuple(finding for finding in found if finding is not None)

    @property
    def missed(self) -> int:
        """Missed events the subscribers counted on all streams over the run."""
        return sum(stream.missed for stream in self.streams)

    @property
    def behind(self) -> int:
        """Events pushed on all streams that had not been received at the last poll."""
        return sum(stream.behind for stream in self.streams)


def diagnose(reports: Sequence[PollReport], findings: Iterable[Findings]) -> Diagnosis:
    """The diagnosis of a run from its poll ``reports``, oldest first, and the
    ``findings`` the monitor made of them."""
    return Diagnosis(run_figures(reports), tally(findings))


def caught_up(report: PollReport) -> bool:
    """Whether at the poll of ``report`` every monitored subscriber had received every
    event its monitored publisher had pushed (no lag on any stream); False if no stream
    had both ends answer that poll."""
    streams = poll_figures(report).streams
    return bool(streams) and all(stream.behind == 0 for stream in streams)
