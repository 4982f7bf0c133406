"""What the monitor's findings cost per poll: the CPU time of `Diagnostician.add`.

No Tango here: the polls are built as `QueryEventSystem` replies of a system of
publisher and subscriber pairs, each server publishing `STREAMS` streams at 10 Hz and
subscribing to the streams of the next server, with performance samples on both sides,
polled every `PERIOD_SECONDS`.  Their reports (`PollHistory`, which parses, diffs and
summarises the samples) are made before the timing starts: only the findings are timed,
poll after poll, with `time.process_time`, and the median over the polls is reported.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta
from typing import Any

import benchmarks.monitor  # noqa: F401  # registers its benchmark first: the table's order
from benchmarks.harness import REGISTRY, Measurement, Options, median_of_runs
from milonga.monitor import Diagnostician, MonitoredServer, Poll, PollHistory, PollReport, Reply

NAME = "monitor_findings"
SIZES = (1, 100)
"""How many servers a system has."""
STREAMS = 5
"""Streams each server publishes, and subscribes to in the next one."""
PERIOD_SECONDS = 1.0
EVENTS_PER_POLL = 10
"""Events pushed on each stream between two polls: 10 Hz."""
QUICK_POLLS = 20
FULL_POLLS = 100
HOST = "tango://127.0.0.1:10000/"
START = datetime(2026, 3, 17, 12, 0, 0)


def _stream(server: int, stream: int) -> str:
    return f"{HOST}bench/findings/{server}/attr{stream}"


def reply_object(
    server: int, servers: int, poll: int, per_poll: int = EVENTS_PER_POLL
) -> dict[str, Any]:
    """The `QueryEventSystem` object of server ``server`` of ``servers`` at ``poll``, with
    ``per_poll`` events pushed on each stream between two polls."""
    pushed = poll * per_poll
    source = (server + 1) % servers
    gap = int(PERIOD_SECONDS * 1_000_000 / per_poll)
    events = [(stream, n) for stream in range(STREAMS) for n in range(per_poll)]
    sampled = poll > 0
    return {
        "version": 1,
        "server": {
            "event_counters": {f"{_stream(server, s)}.change": pushed + 1 for s in range(STREAMS)},
            "perf": [
                {"micros_since_last_event": gap // STREAMS, "push_event_micros": 40 + n}
                for _, n in events
            ]
            if sampled
            else [],
        },
        "client": {
            "event_callbacks": {
                f"{_stream(source, s)}.idl5_change": {
                    "channel_name": f"{HOST}dserver/benchfindings/{source}",
                    "callback_count": 1,
                    "server_counter": pushed,
                    "event_count": pushed,
                    "missed_event_count": 0,
                    "discarded_event_count": 0,
                    "last_resubscribed": None,
                }
                for s in range(STREAMS)
            },
            "not_connected": [],
            "event_channels": {
                f"{HOST}dserver/benchfindings/{source}": {"endpoint": "tcp://127.0.0.1:1"}
            },
            "perf": [
                {
                    "attr_name": f"attr{stream}",
                    "micros_since_last_event": gap // STREAMS,
                    "sleep_micros": gap // STREAMS - 300,
                    "process_micros": 200 + 10 * n,
                    "first_callback_latency_micros": 400 + 20 * n,
                    "callback_count": 1,
                    "wake_count": 1,
                    "discarded": False,
                }
                for stream, n in events
            ]
            if sampled
            else [],
        },
    }


def monitored_servers(servers: int) -> list[MonitoredServer]:
    """The ``servers`` servers of a system, in the order `reply_object` numbers them."""
    return [MonitoredServer(f"dserver/BenchFindings/{i}") for i in range(servers)]


def poll_time(poll: int) -> datetime:
    """When poll number ``poll`` of a system is taken."""
    return START + timedelta(seconds=poll * PERIOD_SECONDS)


def system_reports(servers: int, polls: int) -> list[PollReport]:
    """The reports of ``polls`` polls of a system of ``servers`` servers."""
    monitored = monitored_servers(servers)
    history = PollHistory()
    return [
        history.add(
            Poll(
                poll_time(poll),
                tuple(
                    Reply.decoded(server, reply_object(i, servers, poll))
                    for i, server in enumerate(monitored)
                ),
            )
        )
        for poll in range(polls)
    ]


def cpu_per_poll(reports: list[PollReport]) -> float:
    """The median CPU seconds of `Diagnostician.add` over ``reports``, after the first
    (which has nothing to compare with)."""
    diagnostician = Diagnostician()
    diagnostician.add(reports[0])
    seconds = []
    for report in reports[1:]:
        started = time.process_time()
        findings = diagnostician.add(report)
        seconds.append(time.process_time() - started)
        if findings.active:  # the system is healthy: a finding means the benchmark is wrong
            raise RuntimeError(f"the benchmark's system has findings: {findings.active[0]}")
    return statistics.median(seconds)


@REGISTRY.add(
    NAME,
    f"CPU of the findings of one poll of {' and of '.join(map(str, SIZES))} servers, "
    f"{STREAMS} streams each, no Tango",
)
def monitor_findings(options: Options) -> list[Measurement]:
    polls = QUICK_POLLS if options.quick else FULL_POLLS
    systems = {servers: system_reports(servers, polls) for servers in SIZES}
    runs = [
        {str(servers): cpu_per_poll(reports) for servers, reports in systems.items()}
        for _ in range(options.repeats)
    ]
    result = median_of_runs(runs)
    return [
        Measurement(
            NAME, f"CPU per poll, {servers} server{'s' * (servers > 1)}", seconds * 1000, "ms"
        )
        for servers, seconds in ((int(key), value) for key, value in result.items())
    ]
