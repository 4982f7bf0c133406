"""The event monitor's cost: how long one snapshot takes, and the CPU it uses.

Twenty device servers run in a sandbox, each with one `BenchAttrs` and one
`BenchBusyAdmin` device, and this process subscribes to one attribute of each server, so
every reply has a publisher in it.  A snapshot is `Collector.poll`: `QueryEventSystem` on
every server, all at once, or one after another with a single worker (what a plain loop
of ``command_inout`` calls would do).

It is measured twice.  With idle servers, each answers on loopback in a fraction of a
millisecond, so the client's own work dominates.  With busy servers, each query is
preceded, in the collector's worker thread, by ``Busy(BUSY_SECONDS)`` on that server, so
the server's admin device answers only ``BUSY_SECONDS`` later, as a busy server or a slow
link would: there a snapshot should take about as long as one server, not the sum.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import tango

from benchmarks.harness import REGISTRY, Measurement, Options, median_of_runs
from benchmarks.raw_pytango import DEVICES, ignore, subscribed
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
BUSY_SECONDS = 0.02
QUICK_BUSY_POLLS = 3
FULL_BUSY_POLLS = 10
NAME = "monitor_snapshot"


def start_monitored_servers(sandbox: TangoSandbox, count: int) -> list[str]:
    """Start ``count`` servers ``BenchMonitored/<n>``, each with a `BenchAttrs` device
    ``bench/attrs/<n>`` and a `BenchBusyAdmin` device ``bench/busyadmin/<n>``; return the
    `BenchAttrs` device names."""
    indices = range(1, count + 1)
    for index in indices:
        sandbox.add_device(f"BenchMonitored/{index}", "BenchAttrs", f"bench/attrs/{index}")
        sandbox.add_device(f"BenchMonitored/{index}", "BenchBusyAdmin", f"bench/busyadmin/{index}")
    sandbox.start_servers({f"BenchMonitored/{index}": DEVICES for index in indices})
    return [f"bench/attrs/{index}" for index in indices]


def busy_devices(sandbox: TangoSandbox, servers: Sequence[MonitoredServer]) -> dict[str, Any]:
    """A proxy to each `start_monitored_servers` server's `BenchBusyAdmin` device, by the
    server's admin device name."""
    return {
        server.admin: sandbox.proxy(f"bench/busyadmin/{server.admin.rsplit('/', 1)[1]}")
        for server in servers
    }


class BusyServersCollector(Collector):
    """A `Collector` whose worker calls ``Busy(busy_seconds)`` on a server's
    `BenchBusyAdmin` device right before querying that server.

    ``busy_devices`` maps each server's admin device name to a proxy of its busy device.
    It hooks `Collector._proxy`, which the collector calls right before each query;
    `measure_busy_once` fails if the servers were not made busy.
    """

    def __init__(
        self,
        servers: Sequence[MonitoredServer],
        busy_devices: Mapping[str, Any],
        busy_seconds: float,
        *,
        max_workers: int | None = None,
    ) -> None:
        super().__init__(servers, max_workers=max_workers)
        self._busy_devices = busy_devices
        self._busy_seconds = busy_seconds

    def _proxy(self, server: MonitoredServer) -> tango.DeviceProxy:
        self._busy_devices[server.admin].command_inout("Busy", self._busy_seconds)
        return super()._proxy(server)


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


def measure_busy_once(
    servers: list[MonitoredServer], busy_devices: Mapping[str, Any], polls: int
) -> dict[str, float]:
    """Like `measure_once` without the CPU, each server busy for `BUSY_SECONDS` when asked."""
    with BusyServersCollector(servers[:1], busy_devices, BUSY_SECONDS) as one:
        single = _median_poll_seconds(one, polls)
    with BusyServersCollector(servers, busy_devices, BUSY_SECONDS) as together:
        concurrent = _median_poll_seconds(together, polls)
    with BusyServersCollector(servers, busy_devices, BUSY_SECONDS, max_workers=1) as in_turn:
        sequential = _median_poll_seconds(in_turn, polls)
    if single < BUSY_SECONDS:
        raise RuntimeError(
            f"a busy server answered in {single * 1000:.2f} ms, sooner than its "
            f"{BUSY_SECONDS * 1000:g} ms Busy: BusyServersCollector no longer makes the "
            "servers busy; does Collector still make its proxies in _proxy?"
        )
    return {
        "busy single": single,
        "busy concurrent": concurrent,
        "busy sequential": sequential,
    }


def _snapshot_rows(result: Mapping[str, float], prefix: str, label: str) -> list[Measurement]:
    """The 1-server row and the two 20-server rows compared with it, ``label`` appended."""
    single = result[f"{prefix}single"]
    return [
        Measurement(NAME, f"1 server{label}", single, "ms"),
        Measurement(
            NAME,
            f"{SERVERS} servers, concurrently{label}",
            result[f"{prefix}concurrent"],
            "ms",
            single,
        ),
        Measurement(
            NAME,
            f"{SERVERS} servers, one after another{label}",
            result[f"{prefix}sequential"],
            "ms",
            single,
        ),
    ]


@REGISTRY.add(
    NAME,
    f"QueryEventSystem snapshot of 1 and of {SERVERS} servers, concurrently and in turn, "
    f"idle and busy for {BUSY_SECONDS * 1000:g} ms",
)
def monitor_snapshot(options: Options) -> list[Measurement]:
    polls = QUICK_POLLS if options.quick else FULL_POLLS
    busy_polls = QUICK_BUSY_POLLS if options.quick else FULL_BUSY_POLLS
    with TangoSandbox() as sandbox:
        devices = start_monitored_servers(sandbox, SERVERS)
        with _subscribed_to_each(sandbox, devices):
            servers = resolve_servers([sandbox.trl(device) for device in devices])
            busy = busy_devices(sandbox, servers)
            runs = [
                measure_once(servers, polls) | measure_busy_once(servers, busy, busy_polls)
                for _ in range(options.repeats)
            ]
            del busy  # before the servers stop
    result = {metric: seconds * 1000 for metric, seconds in median_of_runs(runs).items()}
    return [
        *_snapshot_rows(result, "", ""),
        Measurement(NAME, f"CPU per {SERVERS}-server snapshot", result["cpu"], "ms"),
        *_snapshot_rows(result, "busy ", f", each busy {BUSY_SECONDS * 1000:g} ms"),
    ]
