"""The diagnosis as text: the cause, the rates, the latency, and whether events were lost
or only late, each followed by the figures it rests on."""

from __future__ import annotations

import textwrap

from milonga.demo.figures import Diagnosis, ProcessFigures
from milonga.monitor import Statistics
from milonga.monitor.stats import duration

WIDTH = 100


def events_per_second(figures: ProcessFigures | None) -> str:
    """The rate of ``figures``, or ``?`` if there is none."""
    rate = None if figures is None else figures.rate
    return "?" if rate is None else f"{rate:.1f} events/s"


def render_diagnosis(diagnosis: Diagnosis) -> list[str]:
    """The diagnosis as lines of text: cause, rates, latency, and lost or late."""
    findings = [
        *_cause(diagnosis),
        *_rates(diagnosis),
        *_latencies(diagnosis),
        *_late_or_lost(diagnosis),
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
    timed = [s for s in diagnosis.streams if s.processing and s.push_gaps]
    if not timed:
        return ["- Cause: no stream has both push and processing samples to compare."]
    slow = [s for s in timed if s.too_slow]
    lines = [
        f"- Cause: {s.name} takes {_median(s.processing)} per event in {s.subscriber}, "
        f"longer than the {_median(s.push_gaps)} between two events pushed by {s.publisher} "
        "(medians of processing time and event gaps)."
        for s in slow
    ]
    if not slow:
        handled = ", ".join(f"{s.name} in {_median(s.processing)}" for s in timed)
        gaps = ", ".join(
            sorted({f"{_median(s.push_gaps)} between pushes by {s.publisher}" for s in timed})
        )
        lines.append(
            f"- Cause: none left; every stream is handled faster than it is pushed "
            f"({handled}; {gaps}; medians)."
        )
    return lines


def _median(statistics: Statistics | None) -> str:
    """The median of ``statistics`` as a duration, or ``-`` if there are none."""
    return "-" if statistics is None else duration(statistics.median)


_SHARED_THREAD = (
    " That one thread runs the callbacks of every subscription of the process, one event at "
    "a time, so every stream waits behind the slow one."
)


def _rates(diagnosis: Diagnosis) -> list[str]:
    lines = []
    for subscriber in sorted({s.subscriber for s in diagnosis.streams}):
        publishers = sorted({s.publisher for s in diagnosis.streams if s.subscriber == subscriber})
        pushed = ", ".join(
            f"{p} pushed {events_per_second(diagnosis.publisher(p))}" for p in publishers
        )
        shared = _SHARED_THREAD if diagnosis.slow_streams else ""
        lines.append(
            f"- Rates: {pushed}; the event-consumer thread of {subscriber} handled "
            f"{events_per_second(diagnosis.consumer(subscriber))}.{shared}"
        )
    return lines


def _latencies(diagnosis: Diagnosis) -> list[str]:
    lines = []
    for consumer in diagnosis.consumers:
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
    counts = "; ".join(
        f"{s.name} {s.pushed} pushed, {s.received} received, {s.missed} missed"
        for s in diagnosis.streams
    )
    if diagnosis.missed:
        verdict = f"{diagnosis.missed} were lost on the way (missed events)"
    elif diagnosis.behind:
        verdict = f"none was missed, but {diagnosis.behind} had not arrived yet"
    elif diagnosis.slow_streams:
        verdict = "every pushed event arrived and none was missed: they were late, not lost"
    else:
        verdict = "every pushed event arrived and none was missed"
    return [f"- Events: {verdict} ({counts}; server counters, first to last snapshot)."]
