"""The event monitor's cost: how long one snapshot takes, and the CPU it uses.

Twenty servers of one `BenchAttrs` device each run in a sandbox, and this process
subscribes to one attribute of each, so every reply has a publisher in it.  A snapshot is
`Collector.poll`: `QueryEventSystem` on every server, all at once, or one after another
with a single worker (what a plain loop of ``command_inout`` calls would do).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from benchmarks.harness import REGISTRY, Measurement, Options, median_of_runs
from benchmarks.raw_pytango import ignore, start_attrs_servers, subscribed
from milonga.monitor import (
    Collector,
    MonitoredServer,
    PollHistory,
    render_poll,
    resolve_servers,
)
from milonga.sandbox import TangoSandbox

SERVERS = 20
QUICK_POLLS = 10
FULL_POLLS = 50
NAME = "monitor_snapshot"


@contextmanager
def _subscribed_to_each(sandbox: TangoSandbox, devices: list[str]) -> Iterator[None]:
    """Keep one change-event subscription to each device for the ``with`` block."""
    with ExitStack() as stack:
        for device in devices:
            stack.enter_context(subscribed(sandbox.proxy(device), "value00", ignore))
        yield


def _median_poll_seconds(collector: Collector, polls: int) -> float:
    collector.poll()  # the first poll makes the admin proxies
    samples = []
    for _ in range(polls):
        started = time.perf_counter()
        collector.poll()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _cpu_seconds_per_snapshot(collector: Collector, polls: int) -> float:
    """Process CPU time of poll, diff and rendering, per snapshot of every server."""
    history = PollHistory()
    render_poll(history.add(collector.poll()))
    started = time.process_time()
    for _ in range(polls):
        render_poll(history.add(collector.poll()))
    return (time.process_time() - started) / polls


def measure_once(servers: list[MonitoredServer], polls: int) -> dict[str, float]:
    """Median seconds of a poll of the first server, of all at once and of all in turn, and
    the CPU seconds per snapshot of all."""
    with Collector(servers[:1]) as one:
        single = _median_poll_seconds(one, polls)
    with Collector(servers) as together:
        concurrent = _median_poll_seconds(together, polls)
        cpu = _cpu_seconds_per_snapshot(together, polls)
    with Collector(servers, max_workers=1) as in_turn:
        sequential = _median_poll_seconds(in_turn, polls)
    return {"single": single, "concurrent": concurrent, "sequential": sequential, "cpu": cpu}


@REGISTRY.add(
    NAME,
    f"QueryEventSystem snapshot of 1 and of {SERVERS} servers, concurrently and in turn",
)
def monitor_snapshot(options: Options) -> list[Measurement]:
    polls = QUICK_POLLS if options.quick else FULL_POLLS
    with TangoSandbox() as sandbox:
        devices = start_attrs_servers(sandbox, SERVERS)
        with _subscribed_to_each(sandbox, devices):
            servers = resolve_servers([sandbox.trl(device) for device in devices])
            runs = [measure_once(servers, polls) for _ in range(options.repeats)]
    result = {metric: seconds * 1000 for metric, seconds in median_of_runs(runs).items()}
    return [
        Measurement(NAME, "1 server", result["single"], "ms"),
        Measurement(
            NAME, f"{SERVERS} servers, concurrently", result["concurrent"], "ms", result["single"]
        ),
        Measurement(
            NAME,
            f"{SERVERS} servers, one after another",
            result["sequential"],
            "ms",
            result["single"],
        ),
        Measurement(NAME, f"CPU per {SERVERS}-server snapshot", result["cpu"], "ms"),
    ]
