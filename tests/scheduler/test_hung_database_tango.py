"""A database host that accepts connections and never answers, beside a healthy one.

cppTango builds one DeviceProxy at a time per process, and a build against such a host
holds that lock until it times out (three connection attempts of 3 s each here), or
until the host closes the connections, if it is told to hold them for less.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import tango

from milonga import CallbackScheduler
from milonga.scheduler import streams as streams_module
from milonga.scheduler.proxies import BACKOFF_FACTOR
from milonga.scheduler.subscriptions import ASYNC_SUBSCRIPTION
from milonga.testing import wait_until
from tests.scheduler.helpers import ARCHIVE, CHANGE, WAIT_SECONDS, Recorder

pytestmark = pytest.mark.skipif(
    not ASYNC_SUBSCRIPTION, reason="PyTango < 10.1 subscribes in the registering thread"
)


class SilentDatabase:
    """A port on 127.0.0.1 that accepts connections and never answers; counts them.

    With ``hold_seconds``, it closes each connection that long after accepting it, and
    notes when (`time.monotonic`) it accepted and began closing each.
    """

    def __init__(self, listener: socket.socket, hold_seconds: float | None = None) -> None:
        self.port: int = listener.getsockname()[1]
        self._listener = listener
        self._hold_seconds = hold_seconds
        self._accepted: list[socket.socket] = []
        self._closers: list[threading.Timer] = []
        self.accepted_at: list[float] = []
        self.closed_at: dict[int, float] = {}  # by index in accepted_at

    @property
    def connections(self) -> int:
        """How many connections clients have opened to it so far."""
        return len(self._accepted)

    def trl(self, device: str) -> str:
        return f"tango://127.0.0.1:{self.port}/{device}"

    def accept_until_closed(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection = self._listener.accept()[0]
                self.accepted_at.append(time.monotonic())
                self._accepted.append(connection)
                if self._hold_seconds is not None:
                    closer = threading.Timer(
                        self._hold_seconds, self._close, (len(self._accepted) - 1,)
                    )
                    self._closers.append(closer)
                    closer.start()

    def _close(self, index: int) -> None:
        self.closed_at[index] = time.monotonic()
        self._accepted[index].close()

    def close_connections(self) -> None:
        for closer in self._closers:
            closer.cancel()
            closer.join()
        for connection in self._accepted:
            connection.close()


@contextlib.contextmanager
def silent_database(hold_seconds: float | None = None) -> Iterator[SilentDatabase]:
    """A `SilentDatabase`, closed on exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    silent = SilentDatabase(listener, hold_seconds)
    acceptor = threading.Thread(target=silent.accept_until_closed, name="silent-database")
    acceptor.start()
    try:
        yield silent
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join()
        silent.close_connections()


def test_streams_of_a_silent_database_hold_up_no_registration_that_needs_no_new_proxy(
    counter: str,
) -> None:
    with silent_database() as silent, CallbackScheduler(name="test-silent") as scheduler:
        scheduler.connect_event_stream(counter, "value", CHANGE).result(WAIT_SECONDS)
        unreachable = Recorder()
        for attribute in ("a", "b", "c", "d", "e"):  # more than the subscriber threads
            scheduler.register_event_callback(
                silent.trl("far/away/1"), attribute, CHANGE, unreachable
            )
        wait_until(lambda: silent.connections > 0, "a build against the silent database")
        failures_seen_first: list[int] = []
        healthy = Recorder()

        def first_value(event: tango.EventData) -> None:
            if not failures_seen_first:
                failures_seen_first.append(len(unreachable.events))
            healthy(event)

        scheduler.register_event_callback(counter, "value", ARCHIVE, first_value)

        healthy.wait_for(lambda r: r.values == [5])
        assert failures_seen_first == [0], "the far device's proxy is still being built"
    assert not [t for t in threading.enumerate() if t.name.startswith("test-silent")]


def test_a_silent_database_delays_a_new_proxy_elsewhere_by_one_build_at_most(
    counter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No retry comes before the test ends: any build of the silent database after its
    # first one failed would be one that was queued behind it, holding cppTango's lock.
    # (The retries' schedule is the next test's.)
    monkeypatch.setattr(streams_module, "FIRST_RETRY_SECONDS", 3600.0)
    far = [Recorder() for _ in range(4)]  # devices, one build each if nothing held them
    with silent_database() as silent, CallbackScheduler(name="test-hung") as scheduler:
        connections_at_failure: list[int] = []

        def first_of_far(event: tango.EventData) -> None:
            if not connections_at_failure:  # the first build has just failed
                connections_at_failure.append(silent.connections)
            far[0](event)

        callbacks: list[Callable[[tango.EventData], None]] = [first_of_far, *far[1:]]
        for index, callback in enumerate(callbacks):
            scheduler.register_event_callback(
                silent.trl(f"far/away/{index}"), "value", CHANGE, callback
            )
        wait_until(lambda: silent.connections > 0, "a build against the silent database")
        healthy = Recorder()

        # counter is a full TRL, so the scheduler builds a proxy for it, a new one.
        scheduler.register_event_callback(counter, "value", CHANGE, healthy).result(WAIT_SECONDS)

        for recorder in far:
            recorder.wait_for(lambda r: r.errors == ["API_CantConnectToDatabase"])
        assert silent.connections == connections_at_failure[0], "no second build was started"


class FailedBuilds(logging.Handler):
    """Notes each failed build that started a database backoff: how many connections the
    silent database had accepted by then, and the build time and backoff computed."""

    def __init__(self, silent: SilentDatabase) -> None:
        super().__init__(logging.DEBUG)
        self._silent = silent
        self.builds: list[tuple[int, float, float]] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "backoff_seconds"):
            with self.changed:
                self.builds.append(
                    (
                        len(self._silent.accepted_at),
                        record.__dict__["build_seconds"],
                        record.__dict__["backoff_seconds"],
                    )
                )
                self.changed.notify_all()


def test_an_unreachable_database_is_retried_after_a_backoff_proportional_to_its_build_time() -> (
    None
):
    builds_to_see = 3  # two whole retry cycles
    logger = logging.getLogger("milonga.scheduler")
    with (
        silent_database(hold_seconds=0.25) as silent,
        CallbackScheduler(name="test-backoff") as scheduler,
    ):
        failed = FailedBuilds(silent)
        logger.addHandler(failed)
        level = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            for device in ("far/away/1", "far/away/2"):  # one backoff for the database
                scheduler.register_event_callback(silent.trl(device), "value", CHANGE, Recorder())
            with failed.changed:
                assert failed.changed.wait_for(
                    lambda: len(failed.builds) >= builds_to_see, WAIT_SECONDS
                ), f"builds seen failing: {failed.builds}"
            builds = failed.builds[:builds_to_see]
        finally:
            logger.removeHandler(failed)
            logger.setLevel(level)
    started = 0
    for (accepted, build_seconds, backoff_seconds), (next_accepted, _, _) in itertools.pairwise(
        builds
    ):
        assert build_seconds > 0
        assert backoff_seconds >= BACKOFF_FACTOR * build_seconds
        # Each build's connections closed before it failed; the next build's connected
        # after it started: so the gap between them contains the whole backoff.
        last_closed = max(silent.closed_at[index] for index in range(started, accepted))
        assert next_accepted > accepted
        assert silent.accepted_at[accepted] - last_closed >= backoff_seconds
        started = accepted
