"""Registrations withdrawn before cppTango has finished subscribing them, as happens to a
server that is frozen (SIGSTOP) or overloaded: they must hold up nothing."""

from __future__ import annotations

import logging
import threading

import pytest
import tango

from milonga import CallbackScheduler
from milonga.scheduler.subscriptions import ASYNC_SUBSCRIPTION, SUBSCRIBER_THREADS
from milonga.testing import SandboxServers, wait_until
from tests.monitor.frozen import frozen
from tests.scheduler.helpers import (
    CHANGE,
    COUNTER,
    WAIT_SECONDS,
    Recorder,
    client_callbacks,
    client_pending,
)

pytestmark = pytest.mark.skipif(
    not ASYNC_SUBSCRIPTION, reason="PyTango < 10.1 subscribes in the registering thread"
)

ICE_SERVER = "Sched/ice"
ICE_DEVICE = "test/sched/ice"


class FirstCallHolder:
    """A raw PyTango callback that holds the thread of its first call until released.

    cppTango makes every asynchronous subscription of the process on one thread and
    calls each new subscription's callback there first: while this holds that thread, no
    subscription made after it is finished.
    """

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, event: tango.EventData) -> None:
        if not self.holding.is_set():
            self.holding.set()
            self.release.wait(WAIT_SECONDS)


@pytest.fixture
def ice(sandbox_servers: SandboxServers) -> str:
    """The full TRL of a Counter on a server of its own, for a test to freeze."""
    trl = sandbox_servers.add_device(ICE_SERVER, "Counter", ICE_DEVICE)
    sandbox_servers.start(ICE_SERVER, COUNTER)
    return trl


def test_registrations_withdrawn_before_subscribing_ends_hold_no_subscriber_thread(
    sandbox_servers: SandboxServers, counter: str, ice: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="milonga.scheduler")
    holder = FirstCallHolder()
    raw = tango.DeviceProxy(counter)
    raw_id = raw.subscribe_event("value", CHANGE, holder, sub_mode=tango.EventSubMode.AsyncRead)
    try:
        assert holder.holding.wait(WAIT_SECONDS)
        with (
            frozen(sandbox_servers.sandbox, ICE_SERVER),
            CallbackScheduler(name="test-frozen") as scheduler,
        ):
            withdrawn = [  # two for each subscriber thread
                scheduler.register_event_callback(ice, f"attr{index}", CHANGE, Recorder())
                for index in range(2 * SUBSCRIBER_THREADS)
            ]
            # cppTango's own count (query_event_system) would wait for the held thread.
            streams = list(scheduler._subscriptions._streams.values())
            wait_until(
                lambda: all(stream.subscription is not None for stream in streams),
                "every subscription to the frozen server to be asked for",
            )
            for registration in withdrawn:
                registration.cancel()
            unknown = Recorder()  # needs a subscriber thread, but nothing from cppTango
            scheduler.register_event_callback(
                sandbox_servers.sandbox.trl("test/sched/unknown"), "value", CHANGE, unknown
            )

            unknown.wait_for(lambda r: r.errors != [])
            # No subscriber thread was freed by giving up and unsubscribing while cppTango
            # was still making the subscription, which it refuses with a warning.
            assert not [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
            holder.release.set()
    finally:
        holder.release.set()
        raw.unsubscribe_event(raw_id)
    wait_until(lambda: not _pending_to_ice(), "cppTango to finish the frozen server's")
    wait_until(
        lambda: not [t for t in client_callbacks() if t.startswith(ICE_DEVICE)],
        "the withdrawn subscriptions to be ended once cppTango has made them",
    )


def _pending_to_ice() -> list[str]:
    return [topic for topic in client_pending() if topic.startswith(ICE_DEVICE)]
