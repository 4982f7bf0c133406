"""A real Prometheus server scrapes `tango-event-monitor --serve` and answers PromQL
queries about the events a publisher pushed."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers, wait_until
from tests.monitor.test_cli_tango import FAST, WAIT_SECONDS
from tests.monitor.test_exporter_tango import (
    PORT_ATTEMPTS,
    Exporter,
    free_port,
    increase,
    publisher_counters,
    restart_publisher,
    start_exporter,
    start_monitor,
    start_pair,
)

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10"),
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus is not on PATH; on Debian, 'apt-get install -y prometheus' "
        "installs it (.ci/run does so)",
    ),
]
__all__ = ["start_exporter", "start_monitor"]  # fixtures this module uses
SCRAPE_SECONDS = 1
PUSHES = 12
SAMPLES_AFTER = 10
"""Samples of the final value that Prometheus must hold before `increase` is asked:
its extrapolation then adds at most a sixth or so to the rise."""


class Prometheus:
    """A Prometheus server child process and its HTTP API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def api(self, path: str, **parameters: str) -> Any:
        """The ``data`` of ``/api/v1/PATH?parameters``."""
        query = urllib.parse.urlencode(parameters)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
        with urllib.request.urlopen(url, timeout=WAIT_SECONDS) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> list[Any]:
        """The result of an instant query: a list of series."""
        result: list[Any] = self.api("query", query=promql)["result"]
        return result

    def ready_or_gone(self) -> bool:
        """Whether Prometheus is ready to answer queries, or has exited."""
        if self.process.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5):
                return True
        except (urllib.error.URLError, ConnectionError):
            return False


def scrape_config(exporter_port: int) -> str:
    """A Prometheus configuration that scrapes the exporter every `SCRAPE_SECONDS`."""
    return (
        "global:\n"
        f"  scrape_interval: {SCRAPE_SECONDS}s\n"
        f"  scrape_timeout: {SCRAPE_SECONDS}s\n"
        "scrape_configs:\n"
        "  - job_name: milonga\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    """Start Prometheus scraping the exporter on a port; it is killed on teardown."""
    assert PROMETHEUS is not None  # the module is skipped otherwise
    started: list[Prometheus] = []

    def start(exporter_port: int) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(scrape_config(exporter_port))
        for attempt in range(PORT_ATTEMPTS):
            port, log = free_port(), tmp_path / f"prometheus-{attempt}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [
                        str(PROMETHEUS),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / f'data-{attempt}'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            prometheus = Prometheus(process, port, log)
            started.append(prometheus)
            wait_until(prometheus.ready_or_gone, "Prometheus to be ready or to exit", WAIT_SECONDS)
            if process.poll() is None:
                return prometheus
            if "address already in use" not in log.read_text():
                pytest.fail(f"Prometheus failed to start:\n{log.read_text()}")
        pytest.fail(f"no free port found for Prometheus in {PORT_ATTEMPTS} attempts")

    yield start
    for prometheus in started:
        prometheus.process.terminate()
        try:
            prometheus.process.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            prometheus.process.kill()
            prometheus.process.wait()


@pytest.mark.parametrize("restart", [False, True], ids=["steady", "across-a-restart"])
def test_prometheus_counts_the_events_a_publisher_pushed(
    sandbox_servers: SandboxServers,
    start_exporter: Callable[[TangoSandbox, list[str]], Exporter],
    start_prometheus: Callable[[int], Prometheus],
    restart: bool,
) -> None:
    """``increase()`` counts every event pushed, and so across a restart of the publisher:
    its counter starts again from 0, which Prometheus reads as a counter reset."""
    sandbox = sandbox_servers.sandbox
    pair = start_pair(sandbox_servers, "Prometheus")
    source, counter, relay = pair.source, pair.counter, pair.relay
    exporter = start_exporter(sandbox, [source, *FAST])
    prometheus = start_prometheus(exporter.port)
    stream = f"{source}/value.change"
    series = f'tango_event_pushed_total{{server="dserver/PrometheusPub/1",stream="{stream}"}}'

    def scraped(count: int, samples: int = 1) -> Callable[[], bool]:
        """Whether Prometheus holds ``samples`` samples of the series at ``count``."""

        def holds() -> bool:
            return stored().count(count) >= samples

        return holds

    def stored() -> list[float]:
        """The values of the series that Prometheus stored in the last hour, in order."""
        result = prometheus.query(f"{series}[1h]")
        return [float(v) for _, v in result[0]["values"]] if result else []

    first = publisher_counters(sandbox, source)[stream]
    wait_until(scraped(first), f"Prometheus to scrape {series} = {first}", WAIT_SECONDS)
    received = relay.received
    for _ in range(PUSHES):
        counter.Increment()
    wait_until(lambda: relay.received >= received + PUSHES, "the relay's events", WAIT_SECONDS)
    last = publisher_counters(sandbox, source)[stream]
    assert last == first + PUSHES
    pushed = PUSHES
    if restart:
        wait_until(scraped(last), f"Prometheus to scrape {series} = {last}", WAIT_SECONDS)
        restart_publisher(sandbox, pair)
        last = publisher_counters(sandbox, source)[stream]
        assert last < first + PUSHES, "the restart must start the counter again"
        pushed += last  # the events pushed since the restart
    wait_until(
        scraped(last, SAMPLES_AFTER),
        f"Prometheus to scrape {series} = {last} {SAMPLES_AFTER} times",
        WAIT_SECONDS,
    )

    (target,) = prometheus.api("targets")["activeTargets"]
    assert target["health"] == "up", target
    # The samples Prometheus stored rose by exactly the events pushed, counting the one
    # fall of a restart as a reset.
    assert increase(stored()) == pushed
    (resets,) = prometheus.query(f"resets({series}[1h])")
    assert float(resets["value"][1]) == (1 if restart else 0)
    # increase() extrapolates the rise between the first and the last sample: by half a
    # sample interval before the first (the series began within the hour), by up to 1.1
    # intervals after the last.
    (samples,) = prometheus.query(f"{series}[1h]")
    times = [float(t) for t, _ in samples["values"]]
    span, interval = times[-1] - times[0], (times[-1] - times[0]) / (len(times) - 1)
    (answer,) = prometheus.query(f"increase({series}[1h])")
    assert pushed <= float(answer["value"][1]) <= pushed * (span + 1.6 * interval) / span
