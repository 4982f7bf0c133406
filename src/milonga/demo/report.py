"""The diagnosis as text: the cause, the rates, the latency, whether events were lost or
only late, each with the figures it rests on, and what the monitor said while it ran."""

from __future__ import annotations

import textwrap

from milonga.demo.figures import Diagnosis, Raised
from milonga.monitor.figures import ProcessFigures
from milonga.monitor.stats import duration

WIDTH = 100
MONITOR = "tango-event-monitor"


def events_per_second(figures: ProcessFigures | None) -> str:
    """The rate of ``figures``, or ``?`` if there is none."""
    rate = None if figures is None else figures.rate
    return "?" if rate is None else f"{rate:.1f} events/s"


def render_diagnosis(diagnosis: Diagnosis) -> list[str]:
    """The diagnosis as lines of text: cause, rates, latency, lost or late, findings."""
    findings = [
        *_cause(diagnosis),
        *_rates(diagnosis),
        *_latencies(diagnosis),
        *_late_or_lost(diagnosis),
        _raised(diagnosis),
    ]
    return [
        f"Diagnosis, from the {diagnosis.polls} snapshots the monitor took:",
        *(
            line
            for finding in findings
            for line in textwrap.wrap(finding, WIDTH, subsequent_indent="  ")
        ),
    ]


def _cause(diagnosis: Diagnosis) -> list[str]:
    """The slow-callback findings of the whole run, in the rule's own words; or, when
    there is none, the figures that show every stream keeping up."""
    if diagnosis.causes:
        return [f"- Cause: {finding.message}" for finding in diagnosis.causes]
    timed = [s for s in diagnosis.streams if s.processing and s.push_gap]
    if not timed:
        return ["- Cause: no stream has both a push gap and processing times to compare."]
    handled = ", ".join(
        f"{s.name} in {duration(s.processing.median)} against a push every "
        f"{duration(s.push_gap)} by {s.publisher}"
        for s in timed
        if s.processing and s.push_gap
    )
    return [
        f"- Cause: none left; every stream is handled faster than it is pushed ({handled}; "
        "median processing time against the push gap of the server counters)."
    ]


def _rates(diagnosis: Diagnosis) -> list[str]:
    lines = []
    figures = diagnosis.figures
    for subscriber in sorted({s.subscriber for s in diagnosis.streams}):
        publishers = sorted({s.publisher for s in diagnosis.streams if s.subscriber == subscriber})
        pushed = ", ".join(
            f"{p} pushed {events_per_second(figures.publisher(p))}" for p in publishers
        )
        lines.append(
            f"- Rates: {pushed}; the event-consumer thread of {subscriber} handled "
            f"{events_per_second(figures.consumer(subscriber))}."
        )
    return lines


def _latencies(diagnosis: Diagnosis) -> list[str]:
    lines = []
    for consumer in diagnosis.figures.consumers:
        if consumer.latency is None:
            continue
        per_stream = ", ".join(
            f"{s.name} {duration(s.latency.maximum)}"
            for s in diagnosis.streams
            if s.subscriber == consumer.server and s.latency is not None
        )
        lines.append(
            f"- Latency: events reached their first callback in {consumer.server} up to "
            f"{duration(consumer.latency.maximum)} after they were pushed ({per_stream})."
        )
    return lines


def _late_or_lost(diagnosis: Diagnosis) -> list[str]:
    """Lost, late or on time, from the figures the missed-events and falling-behind rules
    read: the missed events counted, and the lag at the last snapshot."""
    counts = "; ".join(
        f"{s.name} {s.pushed} pushed, {s.received} received, {s.missed} missed"
        for s in diagnosis.streams
    )
    if diagnosis.missed:
        verdict = (
            f"some were lost on the way: the subscriber found a server counter skipped "
            f"{diagnosis.missed} time(s) (missed events)"
        )
    elif diagnosis.behind:
        verdict = f"none was missed, but {diagnosis.behind} had not arrived yet"
    elif diagnosis.causes:
        verdict = "every pushed event arrived and none was missed: they were late, not lost"
    else:
        verdict = "every pushed event arrived and none was missed"
    return [f"- Events: {verdict} ({counts}; server counters over the run)."]


def _raised(diagnosis: Diagnosis) -> str:
    """What the monitor's findings said during the run: what `tango-event-monitor` would
    have told a user watching this system."""
    if not diagnosis.raised:
        return f"- Monitor: {MONITOR} raised no finding at any of the {diagnosis.polls} snapshots."
    held = "; ".join(_held(raised, diagnosis.polls) for raised in diagnosis.raised)
    return f"- Monitor: while the run went on, {MONITOR} raised these findings: {held}."


def _held(raised: Raised, polls: int) -> str:
    return (
        f"{raised.kind} ({raised.severity.label}) on {raised.subject} at {raised.polls} of "
        f"{polls} snapshots"
    )
