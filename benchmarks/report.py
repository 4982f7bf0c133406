"""What `milonga report` costs on a day of polls: wall and CPU time, and the page's size.

No Tango here: a recording is written first, in a temporary directory removed afterwards,
as `tango-event-monitor -o` writes it (`JsonLinesWriter`, each line with the findings the
monitor made of it), of `SERVERS` servers polled every `PERIOD_SECONDS` for a day (an hour
with ``--quick``).  Their replies are those of `benchmarks.findings`: each server publishes
`STREAMS` streams and subscribes to those of the next, counters moving, with some trouble
on the way (`Troubles`): a subscriber falling behind for a while, a server that stops
answering, one that restarts, and missed events.  Writing the recording fails if the
monitor does not find each of them.

Then `write_report` is timed (wall clock, and the CPU of the process and of its
drawing workers), and its page's size taken;
then, each on its own, its first part (reading the recording into the `Timeline`), and
the floors under it: reading the file into polls with the `Analysis.add` of each (timed
apart), the chain every reader of polls runs, and decoding every line with `json.loads`
and nothing else.  In two `MODES`: counters only (perf monitoring off, ``perf`` null), and
with perf samples, one event per stream between two polls, so one sample per stream and
side per poll.  Once each, not a median of repeats: a day of polls takes minutes, and the
floors come from the same run.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import benchmarks.lrc  # noqa: F401  # registers its benchmarks first: the table's order
from benchmarks.findings import EVENTS_PER_POLL, STREAMS, monitored_servers, reply_object
from benchmarks.harness import REGISTRY, Measurement, Options
from milonga.monitor import JsonLinesWriter, MonitoredServer, Poll, Reply
from milonga.monitor.analysis import Analysis
from milonga.monitor.jsonl import iter_polls
from milonga.report import write_report
from milonga.report.build import read_timeline

NAME = "report"
SERVERS = 20
PERIOD_SECONDS = 10.0
FULL_POLLS = 24 * 3600 // int(PERIOD_SECONDS)
"""A day: 8,640 polls."""
QUICK_POLLS = 3600 // int(PERIOD_SECONDS)
"""An hour: 360 polls."""
MINIMUM_POLLS = 100
"""The shortest recording with room for every trouble, one after the other."""
MODES = {"counters only": (EVENTS_PER_POLL, False), "with samples": (1, True)}
"""Each mode's name, the events pushed on each stream between two polls and whether the
replies carry a perf sample of each (on both sides)."""
START = datetime(2026, 3, 17, 0, 0, tzinfo=timezone(timedelta(hours=1)))
NOT_ANSWERING = (
    "DevFailed: API_CorbaException: TRANSIENT CORBA system exception: TRANSIENT_ConnectFailed"
)
EXPECTED = {"falling-behind", "server-not-answering", "server-restarted", "missed-events"}
"""The findings the recording's troubles must raise."""

SLOW = 3
"""The server whose subscription to the next one's first stream falls behind."""
SILENT = 15
"""The server that stops answering for a while."""
RESTARTED = 11
"""The server that restarts, not answering while it does."""
MISSED = 7
"""The server whose subscription to the next one's second stream misses events."""
LOST = 5
"""The events that subscription loses."""


class Troubles(NamedTuple):
    """When each trouble happens, in poll numbers."""

    slow: range
    """The polls during which `SLOW` falls further behind, catching up after."""
    silent: range
    """The polls `SILENT` does not answer."""
    down: range
    """The polls `RESTARTED` does not answer, before it answers again restarted."""
    missed: int
    """The poll from which `MISSED` has lost `LOST` events."""

    @classmethod
    def of(cls, polls: int) -> Troubles:
        """Each trouble at its share of a recording of ``polls`` polls, at least
        `MINIMUM_POLLS`."""
        if polls < MINIMUM_POLLS:
            raise ValueError(
                f"polls is {polls}; a recording needs {MINIMUM_POLLS} for its troubles"
            )
        spell = max(12, polls // 100)
        return cls(
            slow=range(polls // 5, polls // 5 + spell),
            silent=range(polls * 7 // 10, polls * 7 // 10 + spell),
            down=range(polls // 2, polls // 2 + 2),
            missed=polls * 17 // 20,
        )


def _topic(data: dict[str, Any], stream: int) -> dict[str, Any]:
    """The subscription of reply ``data`` to stream number ``stream`` of the next server."""
    callbacks: dict[str, dict[str, Any]] = data["client"]["event_callbacks"]
    return next(v for k, v in callbacks.items() if k.endswith(f"/attr{stream}.idl5_change"))


class Mode(NamedTuple):
    """How the servers of a recording are polled."""

    per_poll: int
    """The events pushed on each stream between two polls."""
    samples: bool
    """Whether perf monitoring is on: a sample of each event, on both sides."""


def reply(server: MonitoredServer, index: int, poll: int, mode: Mode, troubles: Troubles) -> Reply:
    """The reply of ``server``, number ``index`` of `SERVERS`, to poll number ``poll``."""
    if (index == SILENT and poll in troubles.silent) or (
        index == RESTARTED and poll in troubles.down
    ):
        return Reply.failed(server, NOT_ANSWERING)
    data = reply_object(index, SERVERS, poll, mode.per_poll)
    if not mode.samples:
        for side in ("server", "client"):
            data[side]["perf"] = None
    since_restart = (poll - troubles.down.stop) * mode.per_poll
    if index == RESTARTED and since_restart >= 0:
        counters = data["server"]["event_counters"]
        data["server"]["event_counters"] = dict.fromkeys(counters, since_restart + 1)
        for subscription in data["client"]["event_callbacks"].values():
            subscription["event_count"] = subscription["callback_count"] = since_restart
    if index == RESTARTED - 1 and since_restart >= 0:  # its subscriber
        for subscription in data["client"]["event_callbacks"].values():
            subscription["server_counter"] = since_restart
    if index == SLOW and poll in troubles.slow:
        lag = (poll - troubles.slow.start + 1) * mode.per_poll
        subscription = _topic(data, 0)
        subscription["server_counter"] -= lag
        subscription["event_count"] -= lag
    if index == MISSED and poll >= troubles.missed:
        subscription = _topic(data, 1)
        subscription["missed_event_count"] = 1
        subscription["event_count"] -= LOST
    return Reply.decoded(server, data)


def poll_time(poll: int) -> datetime:
    """When poll number ``poll`` of the recording is taken."""
    return START + timedelta(seconds=poll * PERIOD_SECONDS)


def write_recording(path: Path, polls: int, mode: Mode) -> None:
    """Write a recording of ``polls`` polls in ``mode`` to ``path`` as
    ``tango-event-monitor -o`` does; raises RuntimeError if the monitor does not find
    each of `EXPECTED` in it."""
    monitored = monitored_servers(SERVERS)
    troubles = Troubles.of(polls)
    analysis = Analysis()
    found: set[str] = set()
    with JsonLinesWriter(path) as writer:
        for number in range(polls):
            replies = (
                reply(server, index, number, mode, troubles)
                for index, server in enumerate(monitored)
            )
            poll = Poll(poll_time(number), tuple(replies))
            findings = analysis.add(poll).findings
            found.update(finding.kind for finding in findings.active)
            writer.write(poll, findings)
    if EXPECTED - found:
        raise RuntimeError(f"the recording's troubles raised no {sorted(EXPECTED - found)}")


@contextmanager
def recorded(polls: int, mode: Mode) -> Iterator[Path]:
    """A recording of ``polls`` polls in ``mode``, in a temporary directory removed when
    the block ends."""
    with tempfile.TemporaryDirectory(prefix="milonga-bench-report-") as directory:
        path = Path(directory) / "run.jsonl"
        write_recording(path, polls, mode)
        yield path


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended: the report's drawing
    workers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_report(recording: Path) -> dict[str, float]:
    """Wall seconds of `write_report` of ``recording``, CPU seconds of it and of its
    drawing workers together, and the page's bytes."""
    output = recording.with_suffix(".html")
    warnings: list[str] = []
    wall, cpu = time.perf_counter(), time.process_time() + _children_cpu()
    written = write_report(recording, output, warn=warnings.append)
    wall = time.perf_counter() - wall
    cpu = time.process_time() + _children_cpu() - cpu
    output.unlink()
    if warnings:  # the recording is as the monitor writes it: a warning means a fault
        raise RuntimeError(f"the report warned: {warnings[0]}")
    return {"wall": wall, "cpu": cpu, "bytes": float(written.size)}


def _json_floor(recording: Path) -> float:
    """CPU seconds of reading ``recording`` and decoding each line with `json.loads`
    alone: under this no Python reader of the file can go."""
    started = time.process_time()
    with open(recording, "rb") as file:
        for line in file:
            json.loads(line)
    return time.process_time() - started


def _analysis(recording: Path) -> dict[str, float]:
    """CPU seconds of reading ``recording`` into polls (`iter_polls`), and of the
    `Analysis.add` of each poll alone."""
    analysis = Analysis()
    adding = 0.0
    started = time.process_time()
    for poll in iter_polls(recording):
        before = time.process_time()
        analysis.add(poll)
        adding += time.process_time() - before
    return {"read": time.process_time() - started - adding, "analysis": adding}


def _timeline(recording: Path) -> float:
    """Wall seconds of the report's first part, reading ``recording`` into its `Timeline`
    (reading, `Analysis` and `Timeline.add`, on one core): the rest is drawing, on every
    core, and writing."""
    started = time.perf_counter()
    read_timeline(recording, lambda problem: None)
    return time.perf_counter() - started


def measure_once(recording: Path) -> dict[str, float]:
    """The report of ``recording``, then its parts and floors, each on its own."""
    return (
        _timed_report(recording)
        | {"timeline": _timeline(recording), "json": _json_floor(recording)}
        | _analysis(recording)
    )


def _measurements(mode: str, polls: int, size: int, figures: dict[str, float]) -> list[Measurement]:
    """The rows of one of `MODES`: the report's wall and CPU time (against reading and
    analysing alone), its parts and floors, and the sizes of the recording and the page."""
    what = f"{SERVERS} servers, {polls * PERIOD_SECONDS / 3600:g} h, {mode}"
    floor = figures["read"] + figures["analysis"]
    return [
        Measurement(NAME, f"report wall, {what}", figures["wall"], "s"),
        Measurement(NAME, f"report CPU, {what}", figures["cpu"], "s", floor),
        Measurement(NAME, f"of which reading (wall), {mode}", figures["timeline"], "s"),
        Measurement(
            NAME,
            f"of which plots and page (wall), {mode}",
            figures["wall"] - figures["timeline"],
            "s",
        ),
        Measurement(NAME, f"floor: read + Analysis.add, {mode}", floor, "s", figures["json"]),
        Measurement(NAME, f"floor: Analysis.add alone, {mode}", figures["analysis"], "s"),
        Measurement(NAME, f"floor: read + json.loads alone, {mode}", figures["json"], "s"),
        Measurement(NAME, f"report size, {mode}", figures["bytes"] / 2**20, "MiB"),
        Measurement(NAME, f"recording size, {mode}", size / 2**20, "MiB"),
    ]


@REGISTRY.add(
    NAME,
    f"milonga report of {SERVERS} servers polled every {PERIOD_SECONDS:g} s for 24 h "
    f"({FULL_POLLS:,} polls; 1 h with --quick), {STREAMS} streams each, with trouble, "
    "without and with perf samples, against reading and analysing alone, no Tango",
)
def report(options: Options) -> list[Measurement]:
    polls = QUICK_POLLS if options.quick else FULL_POLLS
    rows = []
    for mode, (per_poll, samples) in MODES.items():
        with recorded(polls, Mode(per_poll, samples)) as recording:
            size = recording.stat().st_size
            figures = measure_once(recording)
        rows += _measurements(mode, polls, size, figures)
    return rows
