"""The metrics served over real HTTP on 127.0.0.1 (`MetricsServer`), and `parse_address`."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from milonga.monitor.analysis import PollUpdate
from milonga.monitor.findings import Findings
from milonga.monitor.metrics import EventSystemMetrics
from milonga.monitor.poll import PollHistory, PollReport, ServerEntry
from milonga.monitor.serve import (
    MAX_CONNECTIONS,
    MetricsServer,
    PrometheusOutput,
    ServeError,
    parse_address,
)
from tests.monitor.strategies import HOST, poll_of, publisher_reply

SAFETY_SECONDS = 60.0
"""A safety net only: how long a request or a wait may take before the test fails."""
PUB = "dserver/Pub/1"
STREAM = f"{HOST}a/b/c/x.change"


class CountingMetrics(EventSystemMetrics):
    """Metrics that count how often their text is rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered = 0

    def text(self) -> tuple[int, bytes]:
        self.rendered += 1
        return super().text()


class Poller:
    """Polls of one publisher whose counter is given at each poll."""

    def __init__(self) -> None:
        self.history = PollHistory()
        self.polls = 0

    def report(self, counter: int) -> PollReport:
        self.polls += 1
        return self.history.add(poll_of(self.polls, {PUB: publisher_reply({STREAM: counter})}))

    def feed(self, metrics: EventSystemMetrics, counter: int) -> None:
        report = self.report(counter)
        metrics.update(report, Findings(report.time))


def get(server: MetricsServer, path: str = "/metrics") -> tuple[int, str, bytes]:
    """Status, content type and body of ``GET path``."""
    host, port = server.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=SAFETY_SECONDS) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def pushed(body: bytes) -> float:
    """The ``tango_event_pushed_total`` of `STREAM` in a page."""
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "tango_event_pushed_total":
                return sample.value
    raise AssertionError(f"no tango_event_pushed_total in {body!r}")


@pytest.fixture
def metrics() -> CountingMetrics:
    return CountingMetrics()


@pytest.fixture
def server(metrics: CountingMetrics) -> Iterator[MetricsServer]:
    with MetricsServer("127.0.0.1", 0, metrics) as server:
        yield server


def test_metrics_are_served_in_the_text_format(
    server: MetricsServer, metrics: CountingMetrics
) -> None:
    Poller().feed(metrics, 7)

    status, content_type, body = get(server)

    assert (status, content_type) == (200, CONTENT_TYPE_PLAIN_0_0_4)
    assert pushed(body) == 7
    assert server.address[1] != 0


def test_other_paths_are_not_found_and_say_where_the_metrics_are(server: MetricsServer) -> None:
    status, _, body = get(server, "/")

    assert status == 404
    assert b"/metrics" in body


def test_a_page_is_rendered_once_per_poll(server: MetricsServer, metrics: CountingMetrics) -> None:
    poller = Poller()
    poller.feed(metrics, 1)

    first = [get(server)[2] for _ in range(3)]
    rendered = metrics.rendered
    poller.feed(metrics, 2)
    second = [get(server)[2] for _ in range(3)]

    assert rendered == 1
    assert metrics.rendered == 2
    assert first == [first[0]] * 3
    assert second == [second[0]] * 3
    assert (pushed(first[0]), pushed(second[0])) == (1, 2)


class StalledEntries(tuple[ServerEntry, ...]):
    """A report's entries that stall whoever reads them until released: an update
    caught in the middle."""

    reading: threading.Event
    release: threading.Event

    def __iter__(self) -> Iterator[ServerEntry]:
        self.reading.set()
        assert self.release.wait(SAFETY_SECONDS), "the test never released the update"
        return super().__iter__()


def test_a_scrape_during_an_update_shows_the_poll_before(
    server: MetricsServer, metrics: CountingMetrics
) -> None:
    poller = Poller()
    poller.feed(metrics, 1)
    report = poller.report(2)
    entries = StalledEntries(report.entries)
    entries.reading, entries.release = threading.Event(), threading.Event()
    updating = threading.Thread(
        target=metrics.update, args=(PollReport(report.time, entries), Findings(report.time))
    )
    updating.start()
    try:
        assert entries.reading.wait(SAFETY_SECONDS)

        during = get(server)[2]  # the first scrape of poll 1: rendered now
    finally:
        entries.release.set()
        updating.join()

    assert pushed(during) == 1
    assert pushed(get(server)[2]) == 2


def test_a_second_server_on_the_same_port_says_it_is_in_use(
    server: MetricsServer, metrics: CountingMetrics
) -> None:
    host, port = server.address

    with pytest.raises(ServeError) as raised, MetricsServer(host, port, metrics):
        pass

    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "in use" in message
    assert "another port" in message


def test_an_unknown_host_is_named(metrics: CountingMetrics) -> None:
    with pytest.raises(ServeError, match=r"unknown host 'no\.such\.host\.invalid'"):
        MetricsServer("no.such.host.invalid", 0, metrics).start()


def test_an_address_of_another_machine_is_named(metrics: CountingMetrics) -> None:
    # 192.0.2.1 is kept for documentation (RFC 5737): no machine of ours has it.
    with pytest.raises(ServeError, match=r"192\.0\.2\.1:9100: the address is not one"):
        MetricsServer("192.0.2.1", 9100, metrics).start()


def test_close_joins_every_thread_and_can_be_repeated(metrics: CountingMetrics) -> None:
    before = set(threading.enumerate())
    server = MetricsServer("127.0.0.1", 0, metrics)
    server.start()
    assert "milonga-metrics" in {thread.name for thread in threading.enumerate()}
    get(server)

    server.close()
    server.close()

    assert set(threading.enumerate()) == before
    with pytest.raises(urllib.error.URLError):
        get(server)


def test_ipv6_loopback_is_served(metrics: CountingMetrics) -> None:
    try:
        server = MetricsServer("::1", 0, metrics)
        server.start()
    except ServeError as error:
        pytest.skip(f"no IPv6 loopback on this machine: {error}")
    try:
        url = f"http://[::1]:{server.address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=SAFETY_SECONDS) as reply:
            assert reply.status == 200
    finally:
        server.close()


def test_the_output_gives_each_poll_to_the_metrics(metrics: CountingMetrics) -> None:
    poller = Poller()
    report = poller.report(3)
    findings = Findings(report.time)

    PrometheusOutput(metrics).write(PollUpdate(poll_of(1, {}), report, findings))

    assert metrics.generation == 1


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9100", ("::1", 9100)),
        (" host.example:65535 ", ("host.example", 65535)),
    ],
)
def test_addresses_are_read(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the port '' is not a number"),
        ("http", "the port 'http' is not a number"),
        ("host:65536", "the port '65536' is not a number 0 to 65535"),
        ("host:-1", "the port '-1'"),
        (":9100", "the host before ':' is empty"),
        ("::1:9100", "put an IPv6 host in brackets"),
        ("[::1]9100", "needs ]:PORT"),
        ("[::1:9100", "needs ]:PORT"),
    ],
)
def test_bad_addresses_are_named_with_the_form_expected(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as raised:
        parse_address(text)

    message = str(raised.value)
    assert repr(text) in message
    assert "expected [HOST:]PORT" in message


def test_close_cuts_idle_connections_and_joins_their_threads(metrics: CountingMetrics) -> None:
    before = set(threading.enumerate())
    server = MetricsServer("127.0.0.1", 0, metrics)
    server.start()
    idle = [socket.create_connection(server.address, timeout=SAFETY_SECONDS) for _ in range(3)]
    get(server)  # served after the idle ones were accepted: each holds a thread now

    server.close()

    assert set(threading.enumerate()) == before
    for connection in idle:
        assert connection.recv(1) == b""  # cut by the server
        connection.close()


def test_connections_beyond_the_limit_are_closed_at_once(
    server: MetricsServer,
) -> None:
    idle = [
        socket.create_connection(server.address, timeout=SAFETY_SECONDS)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        with socket.create_connection(server.address, timeout=SAFETY_SECONDS) as extra:
            assert extra.recv(1) == b""  # accepted after the others, and closed unserved
    finally:
        for connection in idle:
            connection.close()

    # Once the idle connections end, scrapes are served again.
    deadline = time.monotonic() + SAFETY_SECONDS
    while True:
        try:
            assert get(server)[0] == 200
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "no scrape served after the idle ones ended"
