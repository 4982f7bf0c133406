"""Serve the monitor's metrics to Prometheus over HTTP.

Final API (issue 14's design, but for `MetricsServer`, which serves one
`EventSystemMetrics` rather than a registry, so that it renders once per poll)::

    parse_address(text: str) -> tuple[str, int]
    MetricsServer(host: str, port: int, metrics: EventSystemMetrics)  # a context manager
        .start() -> None; .address -> tuple[str, int]; .close() -> None
    ServeError(Exception)
    PrometheusOutput(metrics: EventSystemMetrics).write(update: PollUpdate) -> None

`MetricsServer` answers ``GET /metrics`` with `EventSystemMetrics.text`, the Prometheus
text format 0.0.4 (`metrics.CONTENT_TYPE`), rendered at most once per poll
(`EventSystemMetrics.generation`) and kept: any number of scrapes cost one rendering per
poll, and a scrape never waits for a poll under way.  `PrometheusOutput` is the poll
loop's output that feeds the metrics.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from milonga.monitor.analysis import PollUpdate
from milonga.monitor.metrics import CONTENT_TYPE, EventSystemMetrics

DEFAULT_HOST = "127.0.0.1"
"""The host `parse_address` gives an address without one: this machine only."""
PATH = "/metrics"
THREAD_NAME = "milonga-metrics"
REQUEST_TIMEOUT_SECONDS = 10.0
"""How long a scraper may take to send its request before its connection is closed."""
MAX_CONNECTIONS = 16
"""Connections served at once; more are closed at once.  Prometheus scrapes over one
connection at a time, so this only bounds the threads a crowd of idle clients could
hold."""
_FORM = "[HOST:]PORT, such as 9100, 0.0.0.0:9100 or [::1]:9100"


class ServeError(Exception):
    """The metrics cannot be served; the message names the address, why, and what to do."""


def parse_address(text: str) -> tuple[str, int]:
    """The host and port of ``[HOST:]PORT`` (an IPv6 host in brackets: ``[::1]:9100``);
    the host is `DEFAULT_HOST` when left out.  Raises ValueError naming the text and the
    form expected."""
    host, port = DEFAULT_HOST, text.strip()
    if port.startswith("["):
        inside, bracket, rest = port[1:].partition("]")
        if not bracket or not inside or not rest.startswith(":"):
            raise ValueError(_bad_address(text, "an IPv6 host in brackets needs ]:PORT after it"))
        host, port = inside, rest[1:]
    elif ":" in port:
        host, _, port = port.rpartition(":")
        if ":" in host:
            raise ValueError(_bad_address(text, "put an IPv6 host in brackets"))
        if not host:
            raise ValueError(_bad_address(text, "the host before ':' is empty"))
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(_bad_address(text, f"the port {port!r} is not a number 0 to 65535"))
    return host, int(port)


def _bad_address(text: str, why: str) -> str:
    return f"cannot read the address {text!r}: {why}; expected {_FORM}"


class MetricsServer:
    """An HTTP server of ``metrics`` at ``/metrics``, on a thread of its own.

    `start` binds and starts serving; `close` (or leaving the ``with`` block) stops
    serving and joins every thread it started.  Port 0 binds a free port: `address` tells
    which.
    """

    def __init__(self, host: str, port: int, metrics: EventSystemMetrics) -> None:
        self._host, self._port = host, port
        self._metrics = metrics
        self._page: tuple[int, bytes] | None = None
        self._rendering = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the address and serve on a daemon thread named `THREAD_NAME`; raises
        `ServeError` if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        self._server = _bind(self._host, self._port, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=THREAD_NAME, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The host and port bound (the port picked, for port 0); before `start`, those
        asked for."""
        if self._server is None:
            return self._host, self._port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving, cut the connections still open, close the socket and join every
        thread of the server; idempotent.  A scrape cut short is taken again by
        Prometheus."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join()
        server.server_close()

    def page(self) -> bytes:
        """The text format of the latest poll: rendered if a poll came since the last
        rendering, else kept from it."""
        page = self._page
        if page is not None and page[0] == self._metrics.generation:
            return page[1]
        with self._rendering:  # one rendering per poll, however many scrapes wait for it
            page = self._page
            if page is None or page[0] != self._metrics.generation:
                page = self._page = self._metrics.text()
        return page[1]

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server for one `MetricsServer`, of the address family of its
    host, that names no host by DNS when it binds.  Its request threads are joined when
    it closes, once their connections are cut."""

    daemon_threads = False

    def __init__(self, family: int, address: tuple[Any, ...], metrics: MetricsServer) -> None:
        self.address_family = family
        self.metrics = metrics
        self._open: set[socket.socket] = set()
        """The connections being served; guarded by ``_guard``."""
        self._guard = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread of its own, unless `MAX_CONNECTIONS` are
        being served: then close it at once."""
        with self._guard:
            full = len(self._open) >= MAX_CONNECTIONS
            if not full:
                self._open.add(request)
        if full:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._guard:
                self._open.discard(request)

    def server_close(self) -> None:
        """Close the listening socket, cut the connections still open (a client that
        sends nothing would otherwise hold its thread for `REQUEST_TIMEOUT_SECONDS`), and
        join their threads."""
        with self._guard:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        super().server_close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks up the host's full name (socket.getfqdn),
        # which can wait on DNS for nothing: the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that went away before its answer is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Answers ``GET /metrics``, and 404 elsewhere."""

    server: _HTTPServer
    timeout = REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:  # the name http.server calls
        if self.path.partition("?")[0] != PATH:
            self._answer(404, b"Not found: the metrics are at /metrics\n", "text/plain")
            return
        self._answer(200, self.server.metrics.page(), CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the name http.server gives
        """Scrapes are not logged: stderr is for the monitor's notes and warnings."""


def _bind(host: str, port: int, metrics: MetricsServer) -> _HTTPServer:
    """An HTTP server bound to ``host``:``port``; raises `ServeError` saying why not."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServeError(
            f"cannot serve metrics on {where}: unknown host {host!r} ({error.strerror}); "
            "give a name or address of this machine, such as 127.0.0.1 or 0.0.0.0"
        ) from None
    family, _, _, _, address = found[0]
    try:
        return _HTTPServer(family, address, metrics)
    except OSError as error:
        raise ServeError(f"cannot serve metrics on {where}: {_why(error)}") from None


def _why(error: OSError) -> str:
    """Why a bind failed, and what to do."""
    if error.errno == errno.EADDRINUSE:
        return (
            "the address is in use (another exporter or program listens there); "
            "choose another port or stop that program"
        )
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose a port from 1024"
    if error.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's; give one of its addresses"
    return f"{error.strerror or error}; check the host and port"


class PrometheusOutput:
    """A poll loop output that gives every poll to an `EventSystemMetrics`."""

    def __init__(self, metrics: EventSystemMetrics) -> None:
        self.metrics = metrics

    def write(self, update: PollUpdate) -> None:
        """Take ``update``'s report and findings: later scrapes show them."""
        self.metrics.update(update.report, update.findings)
