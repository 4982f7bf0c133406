"""The benchmark harness: named benchmarks, medians over repeats, the table and the JSON.

Pure code without Tango, so that it is unit tested on its own.  A benchmark is a function
from `Options` to a list of `Measurement`; it repeats its measurement `Options.repeats`
times and reports the median of each metric (see `median_of_runs`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from milonga.scheduler import stats

QUICK_REPEATS = 3
FULL_REPEATS = 5
POLL_SECONDS = 0.002


@dataclass(frozen=True)
class Options:
    """How thoroughly to measure: ``quick`` runs shorter and fewer repeats."""

    quick: bool = False

    @property
    def repeats(self) -> int:
        return QUICK_REPEATS if self.quick else FULL_REPEATS


@dataclass(frozen=True)
class Measurement:
    """One metric of one benchmark; with a ``baseline`` it is compared to raw PyTango."""

    name: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None

    @property
    def ratio(self) -> float | None:
        """``value / baseline``, or None without a (non-zero) baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, str | float | None]:
        """The JSON object: name, metric, value, unit, plus baseline and ratio if compared."""
        data: dict[str, str | float | None] = {
            "name": self.name,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
        }
        if self.baseline is not None:
            data["baseline"] = self.baseline
            data["ratio"] = self.ratio
        return data


BenchmarkFunction = Callable[[Options], list[Measurement]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    run: BenchmarkFunction


class UnknownBenchmarkError(ValueError):
    """A benchmark name that is not registered; the message lists the valid ones."""


class Registry:
    """The benchmarks by name, in registration order (the order a full run uses)."""

    def __init__(self) -> None:
        self._benchmarks: dict[str, Benchmark] = {}

    def add(self, name: str, summary: str) -> Callable[[BenchmarkFunction], BenchmarkFunction]:
        """Decorator registering a benchmark function under ``name``."""

        def register(function: BenchmarkFunction) -> BenchmarkFunction:
            if name in self._benchmarks:
                raise ValueError(f"benchmark {name!r} is registered twice")
            self._benchmarks[name] = Benchmark(name, summary, function)
            return function

        return register

    @property
    def names(self) -> list[str]:
        return list(self._benchmarks)

    def select(self, names: Sequence[str]) -> list[Benchmark]:
        """The benchmarks called ``names`` in that order; all of them if ``names`` is empty."""
        unknown = [name for name in names if name not in self._benchmarks]
        if unknown:
            raise UnknownBenchmarkError(
                f"unknown benchmark {', '.join(map(repr, unknown))}; valid names are "
                f"{', '.join(self.names)}; pass some of these, or none to run them all"
            )
        return [self._benchmarks[name] for name in names or self.names]


REGISTRY = Registry()
"""The benchmarks ``python -m benchmarks`` runs; modules register theirs on import."""


def median_of_runs(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each metric over ``runs`` (each maps metric to value), in first-run order."""
    if not runs:
        raise ValueError("median_of_runs needs at least one run")
    return {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank: an actually observed value)."""
    result = stats.percentile(values, fraction)
    if result is None:
        raise ValueError("percentile of no values")
    return result


def format_value(value: float | None) -> str:
    """A number for the table: thousands separated above 100, three significant digits below."""
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


HEADERS = ("benchmark", "metric", "value", "unit", "baseline", "ratio")


def render_table(measurements: Iterable[Measurement]) -> str:
    """A plain-text table, one row per measurement; numbers right-aligned."""
    rows = [
        (
            m.name,
            m.metric,
            format_value(m.value),
            m.unit,
            format_value(m.baseline),
            "" if m.ratio is None else f"{m.ratio:.2f}",
        )
        for m in measurements
    ]
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    numeric = {2, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join(
        [line(HEADERS), line(["-" * width for width in widths])] + [line(row) for row in rows]
    )


def write_json(measurements: Iterable[Measurement], path: Path) -> None:
    """Write the measurements to ``path`` as a JSON list of `Measurement.to_json` objects."""
    path.write_text(json.dumps([m.to_json() for m in measurements], indent=2) + "\n")


@dataclass(frozen=True)
class Nudge:
    """What `wait_until` does while the thing it waits for makes no progress: it calls
    ``push`` each time ``progress()`` has returned the same value for ``stall_seconds``."""

    progress: Callable[[], object]
    push: Callable[[], None]
    stall_seconds: float


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    nudge: Nudge | None = None,
    poll_seconds: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll ``condition`` every ``poll_seconds`` until it holds; RuntimeError naming
    ``what`` after ``timeout`` seconds, a safety net only.

    With a ``nudge``, a stall calls ``nudge.push`` and the wait goes on: how long a stall
    lasts paces the pushes, it never ends the wait, so the outcome does not depend on the
    machine's speed.  ``clock`` and ``sleep`` are there for tests.
    """
    deadline = clock() + timeout
    progress = None if nudge is None else nudge.progress()
    since = clock()
    while not condition():
        now = clock()
        if now > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s")
        if nudge is not None:
            current = nudge.progress()
            if current != progress:
                progress, since = current, now
            elif now - since >= nudge.stall_seconds:
                nudge.push()
                since = now
        sleep(poll_seconds)
