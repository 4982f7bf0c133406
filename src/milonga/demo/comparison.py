"""The before/after table of `milonga demo --fixed`: the same figures of two runs side by
side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from milonga.demo.figures import Diagnosis
from milonga.demo.report import events_per_second
from milonga.monitor.stats import duration


@dataclass(frozen=True)
class ScanOutcome:
    """How the call to `TopDevice.Scan()` ended."""

    seconds: float
    error: str | None = None
    """The error's description if it failed."""


@dataclass(frozen=True)
class DemoRun:
    """What one variant of the demo produced: the `Scan()` outcome and the diagnosis."""

    scan: ScanOutcome
    diagnosis: Diagnosis


def _scan_text(scan: ScanOutcome) -> str:
    if scan.error is None:
        return f"returned after {scan.seconds:.1f} s"
    return f"failed after {scan.seconds:.1f} s"


def _duration(micros: float | None) -> str:
    return "-" if micros is None else duration(micros)


def render_comparison(before: DemoRun, after: DemoRun, labels: tuple[str, str]) -> list[str]:
    """A table of ``before`` and ``after`` side by side, headed by ``labels``."""
    rows: list[tuple[str, str, str]] = [("Scan()", _scan_text(before.scan), _scan_text(after.scan))]
    first, then = before.diagnosis.figures, after.diagnosis.figures
    later = {(s.subscriber, s.name): s for s in then.streams}
    for stream in first.streams:
        other = later.get((stream.subscriber, stream.name))
        if other is not None:
            rows.append(
                (
                    f"{stream.name}: handling one event (median)",
                    _duration(stream.processing.median if stream.processing else None),
                    _duration(other.processing.median if other.processing else None),
                )
            )
    for consumer in first.consumers:
        other_consumer = then.consumer(consumer.server)
        other_latency = other_consumer.latency if other_consumer else None
        rows += [
            (
                f"{consumer.server}: events handled",
                events_per_second(consumer),
                events_per_second(other_consumer),
            ),
            (
                f"{consumer.server}: highest latency",
                _duration(consumer.latency.maximum if consumer.latency else None),
                _duration(other_latency.maximum if other_latency else None),
            ),
        ]
    rows += [
        ("missed events", str(before.diagnosis.missed), str(after.diagnosis.missed)),
        ("monitor findings", _kinds(before.diagnosis), _kinds(after.diagnosis)),
    ]
    return _table(("", *labels), rows)


def _kinds(diagnosis: Diagnosis) -> str:
    """The kinds of finding the monitor raised during a run, or ``none``."""
    kinds = dict.fromkeys(raised.kind for raised in diagnosis.raised)
    return ", ".join(kinds) or "none"


def _table(header: tuple[str, str, str], rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """Rows of three columns, the first aligned left and the others right."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
    return [
        f"    {row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}"
        for row in (header, *rows)
    ]
