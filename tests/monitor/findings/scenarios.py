"""Scenarios that cause each kind of finding on real servers, polled by the real collector.

A scenario step is a generator of polls: it drives the devices of
`tests.monitor.findings.devices` in a `System` of servers, waits for
what it did to be done (a condition on the devices, never a time), then takes a poll with
`Watch.poll` and yields it.  The caller decides how many polls it wants: the integration
tests stop at the first poll with the finding they look for, the recorder
(``tests/monitor/data/findings/record.py``) takes a fixed number of each step.  Closing a
step's generator undoes what the step did to the devices (a held gate is opened, a frozen
server resumed).

The systems:

- `Streams`: a `Pusher` publishing to two `Gate` subscribers, each in its own process, so
  each has its own event-consumer thread: ``slow``, which the steps hold to make it slow,
  and ``fast``, its healthy twin, which is never held and receives every event before a
  poll is taken.
- `Churn`: a `Churner` subscribing to the `Streams` publisher, its callbacks subscribed and
  unsubscribed by the steps.
- `Waiting`: a `Gate` subscribed to a device whose server is not running.
- `Restarting`: a `Pusher` whose server the steps restart, and a `Gate` subscribed to it.
- A frozen server is one of `tests.monitor.frozen`'s.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import tango

from milonga.monitor import Collector, Poll, resolve_servers
from milonga.sandbox import TangoSandbox
from milonga.testing import wait_until
from tests.monitor.frozen import frozen

DEVICES = "tests.monitor.findings.devices"
WAIT_SECONDS = 60.0
"""The safety limit of every wait for a condition."""
COLLECTOR_TIMEOUT = 10.0
"""How long a poll waits for a server that should answer: generous, so that a busy machine
does not make a server look frozen."""
BATCH = 12
"""Events pushed per step; enough for the 10% and 90% columns of the tables."""
RELEASES = 3
"""Events ``slow`` handles per step of `slow_consumer`."""
FLOOD_BATCH = 500
"""The most events pushed before `Streams.push` waits for ``fast`` to catch up: half the
1000-event ZeroMQ high-water mark, so ``fast`` never loses any."""
FIRST_FLOOD = 20_000
"""Events pushed at a held ``slow`` in `overflow`'s first round.  The high-water marks of
both ends (1000 each) and the kernel's socket buffers (about 15 000 more of these
events on loopback here) fill first; each further round pushes twice as many."""
FROZEN_TIMEOUT = 3.0
"""The collector's timeout when a server is frozen: each poll waits that long for it."""
ICE_NUMBER = 13
"""The number of the server `tests.monitor.frozen.start_ice` starts, to be frozen."""
MARKER_SECONDS = 0.2
"""How long `Streams.catch_up` waits for an event before it pushes another one, in case
that one was dropped on the way."""
WAITING_PERIOD = 1.0
"""The polling period while a subscription waits to connect: the not-connected finding
needs more than one heartbeat period (10 s) between the poll that first shows a
subscription waiting and the poll that shows it still waiting."""

PUBLISHER_SERVER, PUSHER = "FindingsPub/1", "test/findings/pusher"
SLOW_SERVER, SLOW = "FindingsSlow/1", "test/findings/slow"
FAST_SERVER, FAST = "FindingsFast/1", "test/findings/fast"
CHURN_SERVER, CHURNER = "FindingsChurn/1", "test/findings/churner"
WAITER_SERVER, WAITER = "FindingsWaiter/1", "test/findings/waiter"
ABSENT_SERVER, ABSENT = "FindingsAbsent/1", "test/findings/absent"
RESTART_SERVER, RESTARTED = "FindingsRestart/1", "test/findings/restarted"
FOLLOWER_SERVER, FOLLOWER = "FindingsFollower/1", "test/findings/follower"
Steps = Generator[Poll, None, None]
"""A scenario step: polls taken one by one; closing it undoes what the step did."""
STREAM = f"{PUSHER}/level.change"
"""The stream `Streams` publishes, as findings name it."""


class Watch:
    """The real collector over the servers of some devices."""

    def __init__(
        self, sandbox: TangoSandbox, devices: Sequence[str], timeout: float = COLLECTOR_TIMEOUT
    ) -> None:
        self.sandbox = sandbox
        self.collector = Collector(
            resolve_servers([sandbox.trl(device) for device in devices]), timeout=timeout
        )

    def admin(self, device: str) -> str:
        """The admin device of ``device``'s server, as the monitor and its findings name it."""
        trl = self.sandbox.trl(device)
        return next(s.admin for s in self.collector.servers if trl in s.devices)

    def poll(self) -> Poll:
        """Poll every server now."""
        return self.collector.poll()

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        """Performance sampling on in every server inside the block, off again after."""
        failures = self.collector.set_perf_monitoring(True)
        try:
            if failures:
                raise RuntimeError(f"cannot turn performance sampling on: {failures}")
            yield
        finally:
            self.collector.set_perf_monitoring(False, patience=self.collector.call_limit)

    def close(self) -> None:
        self.collector.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def take(polls: Steps, count: int) -> list[Poll]:
    """The first ``count`` polls of a step; then closes it, undoing what it did."""
    with contextlib.closing(polls):
        return [next(polls) for _ in range(count)]


def attribute(device: tango.DeviceProxy, name: str) -> Any:
    """The value of attribute ``name`` of ``device``."""
    reading: Any = device.read_attribute(name)
    return reading.value


@dataclass
class System(abc.ABC):
    """The servers of a scenario in a sandbox; see `running`."""

    sandbox: TangoSandbox

    servers: ClassVar[tuple[str, ...]] = ()
    """Its servers, in the order `delete` stops them: subscribers first."""
    devices: ClassVar[tuple[str, ...]] = ()
    """The devices whose servers the scenario's `Watch` polls."""

    @abc.abstractmethod
    def start(self) -> None:
        """Define the devices and start the servers; returns once all are up."""

    def delete(self) -> None:
        """Stop the servers and forget their devices, whether they started or not."""
        for server in self.servers:
            self.sandbox.delete_server(server)


SystemT = TypeVar("SystemT", bound=System)


@contextlib.contextmanager
def running(system: SystemT) -> Iterator[SystemT]:
    """``system`` started inside the block, deleted after it, however it ends."""
    try:
        system.start()
        yield system
    finally:
        system.delete()


class Streams(System):
    """A `Pusher` and its two `Gate` subscribers, ``slow`` and ``fast``; see the module."""

    servers = (SLOW_SERVER, FAST_SERVER, PUBLISHER_SERVER)
    devices = (PUSHER, SLOW, FAST)

    def start(self) -> None:
        """The publisher first, as the gates subscribe to it as they start."""
        self.sandbox.add_device(PUBLISHER_SERVER, "Pusher", PUSHER)
        for server, device in ((SLOW_SERVER, SLOW), (FAST_SERVER, FAST)):
            self.sandbox.add_device(server, "Gate", device, {"Source": self.sandbox.trl(PUSHER)})
        self.sandbox.start_server(PUBLISHER_SERVER, DEVICES)
        self.sandbox.start_servers({SLOW_SERVER: DEVICES, FAST_SERVER: DEVICES})
        self.pusher = self.sandbox.proxy(PUSHER)
        self.slow = self.sandbox.proxy(SLOW)
        self.fast = self.sandbox.proxy(FAST)

    @property
    def level(self) -> int:
        """The value of the last event pushed, which is its number."""
        return int(attribute(self.pusher, "level"))

    def push(self, count: int) -> int:
        """Push ``count`` events and wait until ``fast`` has received them all; return the
        new level.  ``fast`` catches up after every `FLOOD_BATCH` events, so it never
        falls behind by more than that."""
        while count > 0:
            batch = min(count, FLOOD_BATCH)
            self.pusher.Push(batch)
            count -= batch
            self.caught_up(self.fast)
        return self.level

    def caught_up(self, gate: tango.DeviceProxy) -> None:
        """Wait until ``gate`` has handled the last event pushed."""
        level = self.level
        wait_until(
            lambda: attribute(gate, "last_value") >= level,
            f"{gate.name()} to handle event {level}",
            WAIT_SECONDS,
        )

    def catch_up(self, gate: tango.DeviceProxy) -> None:
        """Wait until ``gate`` has handled the last event pushed, pushing one more event
        whenever none has come for `MARKER_SECONDS`: after an overflow the last events
        pushed may have been dropped, and only a later one shows ``gate`` is done."""
        deadline = time.monotonic() + WAIT_SECONDS
        level, seen = self.level, attribute(gate, "last_value")
        while seen < level:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gate.name()} did not catch up with event {level}")
            threading.Event().wait(MARKER_SECONDS)
            last, seen = seen, attribute(gate, "last_value")
            if seen == last:
                level = self.push(1)


def steady(streams: Streams, watch: Watch) -> Steps:
    """Healthy: each step pushes `BATCH` events that both gates handle before the poll."""
    while True:
        streams.push(BATCH)
        streams.caught_up(streams.slow)
        yield watch.poll()


def slow_consumer(streams: Streams, watch: Watch) -> Steps:
    """``slow`` handles `RELEASES` events per step while `BATCH` are pushed: each of its
    callbacks blocks its consumer thread while the next ``BATCH // RELEASES`` events are
    pushed, so it handles one event in the time the publisher pushes four, whatever the
    speed of the machine.

    cppTango loses the sample of a callback that is running when its process is queried:
    the one blocked while the poll is taken.  The others of each step are in the poll.
    Closing it opens the gate and waits for ``slow`` to catch up.
    """
    handled = int(attribute(streams.slow, "handled"))
    streams.slow.Hold()
    try:
        while True:
            for _ in range(RELEASES):
                streams.push(BATCH // RELEASES)
                streams.slow.Release(1)
                handled += 1
                wait_until(
                    functools.partial(_handled, streams.slow, handled),
                    "the slow gate to let one more event through",
                    WAIT_SECONDS,
                )
            yield watch.poll()
    finally:
        streams.slow.Open()
        streams.caught_up(streams.slow)


def _handled(gate: tango.DeviceProxy, count: int) -> bool:
    return int(attribute(gate, "handled")) >= count


def overflow(streams: Streams, watch: Watch) -> Steps:
    """``slow`` held while more events are pushed than the way to it can buffer, then let
    go: it loses some, and cppTango counts them as missed.

    Each round yields two polls: one while ``slow`` is held and far behind, one once it
    has caught up.  Rounds push `FIRST_FLOOD` events, then twice as many each time, until
    ``slow`` reports missed events; the step ends after that round.
    """
    missed = int(attribute(streams.slow, "missed"))
    flood = FIRST_FLOOD
    try:
        while attribute(streams.slow, "missed") == missed:
            streams.slow.Hold()
            streams.push(flood)
            yield watch.poll()
            streams.slow.Open()
            streams.catch_up(streams.slow)
            yield watch.poll()
            flood *= 2
    finally:
        streams.slow.Open()
        streams.catch_up(streams.slow)


def shared_samples(streams: Streams, watch: Watch) -> Steps:
    """`steady`, with another client querying the event systems of the three servers
    just before each poll: it takes the samples of the events pushed and received since
    the poll before, which that poll then lacks.  Needs sampling on (`Watch.sampling`)."""
    other = [streams.sandbox.proxy(f"dserver/{server}") for server in Streams.servers]
    while True:
        streams.push(BATCH)
        streams.caught_up(streams.slow)
        for proxy in other:
            proxy.QueryEventSystem()
        yield watch.poll()


class Churn(System):
    """A `Churner` subscribing to the `Streams` publisher, which must be running."""

    servers = (CHURN_SERVER,)
    devices = (CHURNER,)

    def start(self) -> None:
        """With one callback subscribed."""
        self.sandbox.add_device(
            CHURN_SERVER, "Churner", CHURNER, {"Source": self.sandbox.trl(PUSHER)}
        )
        self.sandbox.start_server(CHURN_SERVER, DEVICES)
        self.churner = self.sandbox.proxy(CHURNER)
        self.churner.Subscribe()


def churning(churn: Churn, streams: Streams, watch: Watch) -> Steps:
    """The churner unsubscribes its callback and subscribes it again, one of the two
    before each poll, while `BATCH` events are pushed per poll.  Closing it leaves one
    callback subscribed."""
    try:
        while True:
            churn.churner.Unsubscribe()
            streams.push(BATCH)
            yield watch.poll()
            churn.churner.Subscribe()
            streams.push(BATCH)
            yield watch.poll()
    finally:
        if attribute(churn.churner, "subscriptions") == 0:
            churn.churner.Subscribe()


class Waiting(System):
    """``waiter``, a `Gate` subscribed to a device whose server is not running yet."""

    servers = (WAITER_SERVER, ABSENT_SERVER)
    devices = (WAITER,)

    def start(self) -> None:
        self.sandbox.add_device(ABSENT_SERVER, "Pusher", ABSENT)
        self.sandbox.add_device(WAITER_SERVER, "Gate", WAITER, {"Source": self.sandbox.trl(ABSENT)})
        self.sandbox.start_server(WAITER_SERVER, DEVICES)


def idle(watch: Watch, period: float = 0.0) -> Steps:
    """Polls and nothing else, one every ``period`` seconds, the first at once: the
    polling period of a monitor, which the not-connected finding measures time with."""
    while True:
        yield watch.poll()
        threading.Event().wait(period)


def answered(watch: Watch) -> Steps:
    """Polls every `WAITING_PERIOD` seconds, the first at once, until one that every
    server answered, the last it yields.  A server that failed may take a while to be
    asked again: cppTango waits 1 s before it connects to it again, and the collector
    does not call it while its previous call is under way."""
    for poll in idle(watch, WAITING_PERIOD):
        yield poll
        if all(reply.snapshot is not None for reply in poll.replies):
            return


def connecting(waiting_system: Waiting, watch: Watch) -> Steps:
    """The waiter's source starts; then polls every `WAITING_PERIOD` seconds."""
    waiting_system.sandbox.start_server(ABSENT_SERVER, DEVICES)
    yield from idle(watch, WAITING_PERIOD)


def frozen_server(sandbox: TangoSandbox, server: str, watch: Watch) -> Steps:
    """``server`` frozen (SIGSTOP) for every poll; closing it resumes the server."""
    with frozen(sandbox, server):
        while True:
            yield watch.poll()


class Restarting(System):
    """A `Pusher`, ``restarted``, and ``follower``, a `Gate` subscribed to it."""

    servers = (FOLLOWER_SERVER, RESTART_SERVER)
    devices = (RESTARTED,)

    def start(self) -> None:
        self.sandbox.add_device(RESTART_SERVER, "Pusher", RESTARTED)
        self.sandbox.add_device(
            FOLLOWER_SERVER, "Gate", FOLLOWER, {"Source": self.sandbox.trl(RESTARTED)}
        )
        self.sandbox.start_server(RESTART_SERVER, DEVICES)
        self.sandbox.start_server(FOLLOWER_SERVER, DEVICES)

    def push(self, count: int) -> None:
        """Push ``count`` events and wait until the follower has handled them."""
        pusher = self.sandbox.proxy(RESTARTED)
        pusher.Push(count)
        level = int(attribute(pusher, "level"))
        follower = self.sandbox.proxy(FOLLOWER)
        wait_until(
            lambda: attribute(follower, "last_value") >= level,
            f"the follower to handle event {level}",
            WAIT_SECONDS,
        )


def publishing(restarting: Restarting, watch: Watch) -> Steps:
    """Healthy: `BATCH` events pushed and handled before each poll."""
    while True:
        restarting.push(BATCH)
        yield watch.poll()


def restart(restarting: Restarting, watch: Watch, *, silent: bool) -> Steps:
    """The publisher's server restarts between two polls, then pushes fewer events than
    it had before, so its counter is lower at the next poll it answers, the last one
    this yields.

    The follower's server is started again after it, so that it subscribes at once (it
    would take cppTango's keep-alive thread 10 s or more to notice the restart).  With
    ``silent``, a poll is taken while the publisher is stopped, and more until it
    answers again (`answered`).
    """
    sandbox = restarting.sandbox
    sandbox.stop_server(FOLLOWER_SERVER)
    if silent:
        sandbox.stop_server(RESTART_SERVER)
        yield watch.poll()
        sandbox.start_server(RESTART_SERVER, DEVICES)
    else:
        sandbox.restart_server(RESTART_SERVER)
    sandbox.start_server(FOLLOWER_SERVER, DEVICES)
    restarting.push(BATCH // 2)
    yield from answered(watch)
