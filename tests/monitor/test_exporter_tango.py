"""`tango-event-monitor --serve` as Prometheus meets it: `/metrics` scraped over HTTP
while events flow, checked against the servers' own `QueryEventSystem` counters."""

from __future__ import annotations

import io
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from itertools import pairwise
from typing import NamedTuple

import pytest
import tango
from prometheus_client.parser import text_string_to_metric_families

from milonga.monitor import query_server
from milonga.monitor.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, build_parser, run
from milonga.monitor.figures import stream_of_topic
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers, wait_until
from tests.monitor.conftest import COUNTER, PUBLISHER, RELAY, SUBSCRIBER, EventServers
from tests.monitor.frozen import frozen, start_ice
from tests.monitor.test_cli_tango import (
    FAST,
    MONITOR,
    WAIT_SECONDS,
    RunningMonitor,
    environment,
    perf_is_off,
    start_monitor,
)

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")
__all__ = ["start_monitor"]  # a fixture of test_cli_tango that this module uses

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""A scrape: each sample's value by its name and labels."""
PORT_ATTEMPTS = 5
"""Ports tried before giving up: another program may take a free port meanwhile."""
THREAD_NAME = "milonga-metrics"


def free_port() -> int:
    """A port free on 127.0.0.1 a moment ago (port 0 cannot be told to a subprocess)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> Samples:
    """The samples of ``http://127.0.0.1:port/metrics``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT_SECONDS) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def is_closed(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1."""
    with socket.socket() as client:
        return client.connect_ex(("127.0.0.1", port)) != 0


class Pair(NamedTuple):
    """A `Counter` device and a `Relay` device subscribed to its ``value``."""

    source: str
    """The counter's device name."""
    server: str
    """The counter's device server, ``NamePub/1``."""
    counter: tango.DeviceProxy
    relay: tango.DeviceProxy


def start_pair(sandbox_servers: SandboxServers, name: str) -> Pair:
    """A `Pair` in servers ``{name}Pub/1`` and ``{name}Sub/1``, once the relay has had its
    first event."""
    sandbox = sandbox_servers.sandbox
    source, sink = f"test/{name.lower()}/source", f"test/{name.lower()}/sink"
    server = f"{name}Pub/1"
    sandbox_servers.add_device(server, "Counter", source)
    sandbox_servers.add_device(f"{name}Sub/1", "Relay", sink, {"Source": sandbox.trl(source)})
    sandbox_servers.start(server, "tests/devices/counter.py")
    sandbox_servers.start(f"{name}Sub/1", "tests/devices/relay.py")
    pair = Pair(source, server, sandbox.proxy(source), sandbox.proxy(sink))
    wait_until(lambda: pair.relay.received >= 1, "the relay's first event", WAIT_SECONDS)
    return pair


def restart_publisher(sandbox: TangoSandbox, pair: Pair) -> None:
    """Restart ``pair``'s counter, and push until the relay, which subscribes again by
    itself, receives from the new process."""
    sandbox.restart_server(pair.server)
    received = pair.relay.received

    def relay_receives() -> bool:
        pair.counter.Increment()
        return bool(pair.relay.received > received)

    wait_until(relay_receives, "the relay to receive from the restarted publisher", WAIT_SECONDS)


class Exporter:
    """A monitor subprocess serving metrics on `port`."""

    def __init__(self, monitor: RunningMonitor, port: int) -> None:
        self.monitor = monitor
        self.port = port

    def scrape(self) -> Samples:
        return scrape(self.port)

    def wait_for(self, what: str, condition: Callable[[Samples], bool]) -> Samples:
        """Scrape until ``condition`` holds of a scrape; return that scrape."""
        scrapes: list[Samples] = []

        def holds() -> bool:
            scrapes.append(self.scrape())
            return condition(scrapes[-1])

        wait_until(holds, what, WAIT_SECONDS)
        return scrapes[-1]


@pytest.fixture
def start_exporter(
    start_monitor: Callable[[list[str], dict[str, str]], RunningMonitor],
) -> Callable[[TangoSandbox, list[str]], Exporter]:
    def start(sandbox: TangoSandbox, arguments: list[str]) -> Exporter:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            command = [*MONITOR, *arguments, "--serve", f"127.0.0.1:{port}", "--quiet"]
            monitor = start_monitor(command, environment(sandbox))
            monitor.wait_for_stderr("the server started, or the bind failing", "/metrics")
            if "serving Prometheus metrics at" in monitor.stderr:
                return Exporter(monitor, port)
            status, stderr = monitor.finish()  # another program took the port meanwhile
            assert status == EXIT_USAGE, stderr
            assert "the address is in use" in stderr, stderr
        pytest.fail(f"no free port found for the exporter in {PORT_ATTEMPTS} attempts")

    return start


def publisher_counters(sandbox: TangoSandbox, device: str) -> dict[str, int]:
    """The server's own pushed counters of ``device``'s server, by short stream name."""
    snapshot = query_server(sandbox.trl(device))
    assert snapshot.server is not None
    return {stream_of_topic(name): count for name, count in snapshot.server.publishers.items()}


def subscriber_counters(sandbox: TangoSandbox, device: str) -> dict[str, int]:
    """The events each subscription of ``device``'s server received, by short stream name."""
    snapshot = query_server(sandbox.trl(device))
    assert snapshot.client is not None
    return {
        stream_of_topic(topic): subscription.event_count
        for topic, subscription in snapshot.client.subscriptions.items()
    }


def test_scrapes_match_the_servers_own_counters(
    event_servers: EventServers, start_exporter: Callable[[TangoSandbox, list[str]], Exporter]
) -> None:
    sandbox = event_servers.sandbox
    exporter = start_exporter(sandbox, [COUNTER, RELAY, *FAST])
    publisher, subscriber = f"dserver/{PUBLISHER}", f"dserver/{SUBSCRIBER}"
    exporter.wait_for(
        "both servers up", lambda s: value(s, "tango_server_up", server=subscriber) == 1
    )

    event_servers.increment(7)  # returns once the relay has them all: nothing more moves
    pushed = publisher_counters(sandbox, COUNTER)
    received = subscriber_counters(sandbox, RELAY)
    stream = "test/monitor/counter/value.change"
    assert pushed[stream] > 0
    assert received[stream] > 0

    def matches(samples: Samples) -> bool:
        return all(
            value(samples, "tango_event_pushed_total", server=publisher, stream=s) == count
            for s, count in pushed.items()
        ) and all(
            value(samples, "tango_event_received_total", server=subscriber, stream=s) == count
            for s, count in received.items()
        )

    samples = exporter.wait_for("the scraped counters to equal the servers' own", matches)
    assert value(samples, "tango_server_up", server=publisher) == 1
    assert value(samples, "tango_event_missed_total", server=subscriber, stream=stream) == 0
    assert value(samples, "tango_event_callbacks", server=subscriber, stream=stream) == 1
    assert value(samples, "tango_event_not_connected", server=subscriber) == 0
    status, stderr = exporter.monitor.stop(signal.SIGTERM)
    assert status == 143, stderr
    assert "Traceback" not in stderr


def increase(values: list[float]) -> float:
    """How much a counter rose over ``values``, as Prometheus's ``increase()`` counts it
    (without extrapolating): a value lower than the one before is a reset, after which
    the counter counted from 0 up to it."""
    return sum(now - before if now >= before else now for before, now in pairwise(values))


def test_the_pushed_total_counts_the_events_of_a_restarted_publisher(
    sandbox_servers: SandboxServers,
    start_exporter: Callable[[TangoSandbox, list[str]], Exporter],
) -> None:
    sandbox = sandbox_servers.sandbox
    pair = start_pair(sandbox_servers, "Exporter")
    source = pair.source
    exporter = start_exporter(sandbox, [source, *FAST])
    publisher, stream = "dserver/ExporterPub/1", f"{source}/value.change"
    seen: list[float] = []  # every value scraped, in order

    def pushed(samples: Samples) -> float | None:
        found = value(samples, "tango_event_pushed_total", server=publisher, stream=stream)
        if found is not None:
            seen.append(found)
        return found

    exporter.wait_for("the stream", lambda s: pushed(s) is not None)
    for _ in range(20):
        pair.counter.Increment()
    before = publisher_counters(sandbox, source)[stream]
    exporter.wait_for("the counter before the restart", lambda s: pushed(s) == before)

    restart_publisher(sandbox, pair)
    after = publisher_counters(sandbox, source)[stream]
    assert after < before, "the restart must show as a counter going down"
    # The exported value is the new process's own counter: it drops, which Prometheus
    # reads as a reset, so its increase() counts the events of both processes.
    exporter.wait_for(f"the restarted publisher's counter {after}", lambda s: pushed(s) == after)

    assert increase(seen) == before - seen[0] + after, seen


def test_a_scrape_during_a_slow_poll_shows_the_poll_before(
    event_servers: EventServers,
    sandbox_servers: SandboxServers,
    start_exporter: Callable[[TangoSandbox, list[str]], Exporter],
) -> None:
    sandbox = event_servers.sandbox
    ice, ice_device = start_ice(sandbox_servers)
    exporter = start_exporter(sandbox, [COUNTER, ice_device, *FAST])
    publisher = f"dserver/{PUBLISHER}"
    frozen_admin = f"dserver/{ice}"
    exporter.wait_for(
        "the server to be frozen up",
        lambda s: value(s, "tango_server_up", server=frozen_admin) == 1,
    )
    with frozen(sandbox, ice):
        # Each poll now waits the 1 s timeout for it; scrapes answer from the poll before.
        samples = exporter.wait_for(
            "the frozen server down",
            lambda s: value(s, "tango_server_up", server=frozen_admin) == 0,
        )
        assert value(samples, "tango_server_up", server=publisher) == 1
        times = [value(exporter.scrape(), "milonga_last_poll_timestamp_seconds") for _ in range(3)]
        assert None not in times
    exporter.wait_for(
        "the frozen server up again",
        lambda s: value(s, "tango_server_up", server=frozen_admin) == 1,
    )
    status, stderr = exporter.monitor.interrupt()
    assert status == 130, stderr
    assert is_closed(exporter.port)


def test_sigterm_closes_the_port_and_turns_sampling_off(
    event_servers: EventServers,
    start_exporter: Callable[[TangoSandbox, list[str]], Exporter],
) -> None:
    sandbox = event_servers.sandbox
    exporter = start_exporter(sandbox, [COUNTER, RELAY, "--monitor", *FAST])
    publisher = f"dserver/{PUBLISHER}"
    exporter.wait_for("a first poll", lambda s: value(s, "tango_server_up", server=publisher) == 1)

    def sampled(samples: Samples) -> bool:
        """Whether push times were sampled; pushes one more event if not (sampling is on
        from before the first poll, but events may have to wait for the subscriber)."""
        if (value(samples, "tango_event_push_seconds_count", server=publisher) or 0) > 0:
            return True
        event_servers.increment(1)
        return False

    exporter.wait_for("push-time samples", sampled)
    status, stderr = exporter.monitor.stop(signal.SIGTERM)

    assert status == 143, stderr
    assert "Traceback" not in stderr
    assert is_closed(exporter.port)
    assert perf_is_off(sandbox, COUNTER, RELAY)


def test_a_port_in_use_is_a_clear_error_and_nothing_runs(sandbox_servers: SandboxServers) -> None:
    sandbox = sandbox_servers.sandbox
    _, device = start_ice(sandbox_servers)  # a server of its own, sampling off
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monitor = RunningMonitor(
            [*MONITOR, device, "--monitor", "--serve", f"127.0.0.1:{port}"], environment(sandbox)
        )
        status, stderr = monitor.finish()

    assert status == EXIT_USAGE
    assert stderr.startswith("tango-event-monitor: error: cannot serve metrics on 127.0.0.1:")
    assert stderr.count("\n") == 1, stderr
    assert perf_is_off(sandbox, device)


def run_in_process(sandbox: TangoSandbox, *argv: str) -> tuple[int, str]:
    """Run the command line in this process, with TANGO_HOST set by ``argv``'s TRLs."""
    out, err = io.StringIO(), io.StringIO()
    status = run(build_parser().parse_args(list(argv)), out=out, err=err)
    return status, err.getvalue()


def metrics_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(THREAD_NAME)]


@pytest.mark.parametrize(
    ("output", "expected"),
    [(None, EXIT_OK), ("/dev/full", EXIT_FAILED)],
    ids=["count", "output-error"],
)
def test_the_server_closes_when_the_monitor_stops_by_itself(
    event_servers: EventServers, output: str | None, expected: int
) -> None:
    sandbox = event_servers.sandbox
    port = free_port()
    extra = [] if output is None else ["-o", output]
    status, stderr = run_in_process(
        sandbox, sandbox.trl(COUNTER), *FAST, "--count", "2", "--serve", f"127.0.0.1:{port}", *extra
    )

    assert status == expected, stderr
    assert "serving Prometheus metrics" in stderr
    assert metrics_threads() == []
    assert is_closed(port)
