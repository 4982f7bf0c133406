"""What the Prometheus exporter costs: CPU per poll, scrape time and resident memory.

No Tango here: the replies are those of `benchmarks.findings` (servers publishing
`STREAMS` streams at 10 Hz each, subscribed to the next server's), turned into JSON text
as `QueryEventSystem` returns it, in two `MODES`: without perf samples (``perf`` null on
both sides, what the exporter reads without ``--monitor``) and with them (``--monitor``:
every histogram is on).  At every poll the exporter's own work is timed with
`time.process_time`: parsing the replies (`Reply.answered`), diffing them with the
previous poll (`PollHistory.add`), the findings (`Diagnostician.add`) and the metrics
(`EventSystemMetrics.update`), each on its own; then, as the floor no Python reader of
the replies can go under, decoding the same texts with `json.loads` alone.  After every
`SCRAPE_EVERY` polls the scrape, `EventSystemMetrics.text` (what the metrics server
renders once per poll and serves), is timed the same way.  Making the reply text is not
timed: the network and the server do that.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise

import psutil

import benchmarks.findings  # noqa: F401  # registers its benchmark first: the table's order
from benchmarks.findings import STREAMS, monitored_servers, poll_time, reply_object
from benchmarks.harness import REGISTRY, Measurement, Options, median_of_runs
from milonga.monitor import Diagnostician, Findings, MonitoredServer, Poll, PollHistory, Reply
from milonga.monitor.metrics import EventSystemMetrics

NAME = "exporter"
SERVERS = 100
COMPARED = (1, 20)
"""The sizes compared, with samples, as `monitor_snapshot` compares 20 servers with 1."""
QUICK_POLLS = 10
FULL_POLLS = 50
SCRAPE_EVERY = 5
"""Scrape after every fifth poll only: each scrape renders everything once, as the
metrics server does once per poll; a few per run are enough for a median."""
MODES = {"counters only": False, "with samples": True}
"""Each mode's name, and whether its replies carry perf samples (``--monitor``)."""

STAGES = ("parse", "diff", "findings", "metrics update")
"""The parts of the exporter's work per poll, timed one by one."""
FLOOR = "json.loads"
"""The key of the floor: decoding the poll's reply texts and nothing else."""


def reply_text(server: int, servers: int, poll: int, samples: bool) -> str:
    """The `QueryEventSystem` reply text of server ``server`` of ``servers`` at ``poll``;
    without ``samples``, as a server answers while perf monitoring is off (``perf``
    null on both sides)."""
    reply = reply_object(server, servers, poll)
    if not samples:
        for side in ("server", "client"):
            reply[side]["perf"] = None
    return json.dumps(reply)


def _poll_stages(
    exporter: tuple[PollHistory, Diagnostician, EventSystemMetrics],
    when: datetime,
    answers: Iterable[tuple[MonitoredServer, str]],
) -> tuple[list[float], Findings]:
    """Take the poll taken ``when``, each server's reply text in ``answers``, through the
    exporter's stages; return the process CPU seconds of each of `STAGES`, and the
    findings."""
    history, diagnostician, metrics = exporter
    marks = [time.process_time()]
    replies = tuple(Reply.answered(server, text) for server, text in answers)
    marks.append(time.process_time())
    report = history.add(Poll(when, replies))
    marks.append(time.process_time())
    findings = diagnostician.add(report)
    marks.append(time.process_time())
    metrics.update(report, findings)
    marks.append(time.process_time())
    return [after - before for before, after in pairwise(marks)], findings


def _floor(texts: Sequence[str]) -> float:
    """Process CPU seconds of decoding ``texts`` with the stdlib's JSON decoder alone."""
    started = time.process_time()
    for text in texts:
        json.loads(text)
    return time.process_time() - started


def _scrape(metrics: EventSystemMetrics) -> dict[str, float]:
    """Process CPU seconds of rendering ``metrics`` as the metrics server serves them,
    and the size of that text in bytes."""
    started = time.process_time()
    _, text = metrics.text()
    return {"scrape": time.process_time() - started, "bytes": len(text)}


def _rss() -> float:
    """Resident memory of this process in bytes, garbage collected first."""
    gc.collect()
    return float(psutil.Process().memory_info().rss)


def exporter_polls(servers: int, polls: int, samples: bool) -> dict[str, float]:
    """Run the exporter's work on ``polls`` polls of a system of ``servers`` servers,
    whose replies carry perf samples if ``samples``.

    Returns the medians, over the polls after the first (which has nothing to compare
    with), of the CPU seconds per poll of each of `STAGES`, of all of them (``cpu``) and
    of the floor (`FLOOR`); over the scrapes made after every `SCRAPE_EVERY` polls, of
    what `_scrape` measures; the resident memory of this process after the last poll
    (``rss``) and how far it grew from before the first (``rss growth``), in bytes.
    ``polls`` must be at least `SCRAPE_EVERY`.
    """
    if polls < SCRAPE_EVERY:
        raise ValueError(f"polls is {polls}; it must be at least SCRAPE_EVERY ({SCRAPE_EVERY})")
    monitored = monitored_servers(servers)
    metrics = EventSystemMetrics()
    exporter = (PollHistory(), Diagnostician(), metrics)
    timings: dict[str, list[float]] = {}
    before = _rss()
    for number in range(polls):
        texts = [reply_text(i, servers, number, samples) for i in range(servers)]
        seconds, findings = _poll_stages(
            exporter, poll_time(number), zip(monitored, texts, strict=True)
        )
        if findings.active:  # the system is healthy: a finding means the benchmark is wrong
            raise RuntimeError(f"the benchmark's system has findings: {findings.active[0]}")
        figures = dict(zip(STAGES, seconds, strict=True))
        figures |= {"cpu": sum(seconds), FLOOR: _floor(texts)}
        if number > 0:
            for key, value in figures.items():
                timings.setdefault(key, []).append(value)
        if number % SCRAPE_EVERY == SCRAPE_EVERY - 1:
            for key, value in _scrape(metrics).items():
                timings.setdefault(key, []).append(value)
    result = {key: statistics.median(values) for key, values in timings.items()}
    result["rss"] = _rss()
    result["rss growth"] = result["rss"] - before
    return result


def measure_once(polls: int) -> dict[str, float]:
    """One repeat: `SERVERS` servers in each of `MODES`, then the CPU per poll of each
    size of `COMPARED`, with samples."""
    result: dict[str, float] = {}
    for mode, samples in MODES.items():
        measured = exporter_polls(SERVERS, polls, samples)
        result |= {f"{mode}: {key}": value for key, value in measured.items()}
    for servers in COMPARED:
        result[f"{servers} cpu"] = exporter_polls(servers, polls, samples=True)["cpu"]
    return result


def _mode_measurements(mode: str, figures: dict[str, float]) -> list[Measurement]:
    """The rows of one of `MODES` from its ``figures`` (`exporter_polls`' keys): the CPU
    per poll per server, against the floor as its baseline, then each stage and the
    floor on their own; the scrape and its size."""
    micros = {key: figures[key] / SERVERS * 1e6 for key in ("cpu", *STAGES, FLOOR)}
    cpu = f"CPU per poll per server, {mode}"
    return [
        Measurement(NAME, f"{cpu}, {SERVERS} servers", micros["cpu"], "µs", micros[FLOOR]),
        *(Measurement(NAME, f"{cpu}: {stage}", micros[stage], "µs") for stage in STAGES),
        Measurement(NAME, f"{cpu}: floor, {FLOOR} alone", micros[FLOOR], "µs"),
        Measurement(NAME, f"scrape CPU, {SERVERS} servers, {mode}", figures["scrape"] * 1e3, "ms"),
        Measurement(NAME, f"scrape size, {mode}", figures["bytes"] / 2**10, "KiB"),
    ]


@REGISTRY.add(
    NAME,
    f"exporter CPU per poll, scrape and memory with {SERVERS} servers, {STREAMS} streams "
    f"each, without and with perf samples, and {COMPARED[1]} servers against "
    f"{COMPARED[0]}, no Tango",
)
def exporter(options: Options) -> list[Measurement]:
    polls = QUICK_POLLS if options.quick else FULL_POLLS
    result = median_of_runs([measure_once(polls) for _ in range(options.repeats)])
    modes = {
        mode: {
            key.removeprefix(f"{mode}: "): value
            for key, value in result.items()
            if key.startswith(f"{mode}: ")
        }
        for mode in MODES
    }
    sampled = modes["with samples"]
    single, compared = (result[f"{servers} cpu"] * 1000 for servers in COMPARED)
    return [
        *(row for mode, figures in modes.items() for row in _mode_measurements(mode, figures)),
        Measurement(
            NAME,
            f"resident memory after {polls} polls, with samples",
            sampled["rss"] / 2**20,
            "MiB",
        ),
        Measurement(
            NAME, "resident memory growth, with samples", sampled["rss growth"] / 2**20, "MiB"
        ),
        Measurement(NAME, f"CPU per poll, {COMPARED[0]} server, with samples", single, "ms"),
        Measurement(
            NAME, f"CPU per poll, {COMPARED[1]} servers, with samples", compared, "ms", single
        ),
    ]
