"""A database host that accepts connections and never answers, beside a healthy one.

cppTango builds one DeviceProxy at a time per process, and a build against such a host
holds that lock until it times out (three connection attempts of 3 s each here).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import tango

from milonga import CallbackScheduler
from milonga.scheduler import scheduler as scheduler_module
from milonga.scheduler.scheduler import ASYNC_SUBSCRIPTION
from milonga.testing import wait_until
from tests.scheduler.helpers import ARCHIVE, CHANGE, WAIT_SECONDS, Recorder

pytestmark = pytest.mark.skipif(
    not ASYNC_SUBSCRIPTION, reason="PyTango < 10.1 subscribes in the registering thread"
)


class SilentDatabase:
    """A port on 127.0.0.1 that accepts connections and never answers; counts them."""

    def __init__(self, listener: socket.socket) -> None:
        self.port: int = listener.getsockname()[1]
        self._listener = listener
        self._accepted: list[socket.socket] = []

    @property
    def connections(self) -> int:
        """How many connections clients have opened to it so far."""
        return len(self._accepted)

    def trl(self, device: str) -> str:
        return f"tango://127.0.0.1:{self.port}/{device}"

    def accept_until_closed(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self._accepted.append(self._listener.accept()[0])

    def close_connections(self) -> None:
        for connection in self._accepted:
            connection.close()


@contextlib.contextmanager
def silent_database() -> Iterator[SilentDatabase]:
    """A `SilentDatabase`, closed on exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    silent = SilentDatabase(listener)
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
    monkeypatch.setattr(scheduler_module, "FIRST_RETRY_SECONDS", 3600.0)
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
