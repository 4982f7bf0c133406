"""The collector and the Python API against a real publisher and subscriber."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tango

from milonga.monitor import (
    Collector,
    MonitoredServer,
    MonitorSetupError,
    Poll,
    PollHistory,
    query_process,
    query_server,
    resolve_servers,
    set_perf_monitoring,
)
from milonga.monitor.collector import check_query_support
from milonga.monitor.stats import Metric
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers, wait_until
from tests.monitor.conftest import (
    COUNTER,
    PUBLISHER,
    RELAY,
    SPARE,
    SUBSCRIBER,
    EventServers,
)
from tests.monitor.frozen import frozen, start_ice, thread_states

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")


def servers_of(sandbox: TangoSandbox) -> list[MonitoredServer]:
    return resolve_servers([sandbox.trl(COUNTER), sandbox.trl(RELAY)])


def connect(collector: Collector) -> None:
    """Poll until a poll that every server of ``collector`` answered: each is connected,
    with no call under way (a first call may outlast its poll on a busy machine)."""
    wait_until(
        lambda: all(reply.error is None for reply in collector.poll().replies),
        "a poll that every server answers",
    )


def test_devices_of_one_server_make_one_entry(event_servers: EventServers) -> None:
    sandbox = event_servers.sandbox
    prefix = f"tango://{sandbox.tango_host}/"

    servers = resolve_servers(
        [
            sandbox.trl(COUNTER),
            sandbox.trl(SPARE),
            sandbox.trl(f"dserver/{PUBLISHER}"),
            sandbox.trl(RELAY),
        ]
    )

    assert servers == [
        MonitoredServer(f"{prefix}dserver/{PUBLISHER}", (sandbox.trl(COUNTER), sandbox.trl(SPARE))),
        MonitoredServer(f"{prefix}dserver/{SUBSCRIBER}", (sandbox.trl(RELAY),)),
    ]


def test_every_spelling_of_a_server_makes_one_entry(
    event_servers: EventServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = event_servers.sandbox
    monkeypatch.setenv("TANGO_HOST", f"localhost:{sandbox.port}")
    names = [
        COUNTER,
        f"tango://127.0.0.1:{sandbox.port}/{SPARE}",
        f"TANGO://LocalHost:{sandbox.port}/{COUNTER.upper()}",
    ]

    assert resolve_servers(names) == [MonitoredServer(f"dserver/{PUBLISHER}", tuple(names))]


def test_unknown_devices_and_databases_are_setup_errors(tango_sandbox: TangoSandbox) -> None:
    with pytest.raises(
        MonitorSetupError, match=r"unknown device .*no/such/device.*does not define"
    ):
        resolve_servers([tango_sandbox.trl("no/such/device")])
    with pytest.raises(MonitorSetupError, match="cannot reach the Tango database") as raised:
        resolve_servers(["tango://127.0.0.1:1/a/b/c"])
    assert "at 127.0.0.1:1 " in str(raised.value)
    assert "TANGO_HOST" not in str(raised.value)
    with pytest.raises(MonitorSetupError, match="does not define") as raised:
        resolve_servers([tango_sandbox.trl("no/such/device")])
    assert "TANGO_HOST" not in str(raised.value)
    with pytest.raises(MonitorSetupError, match="not a device name"):
        resolve_servers([tango_sandbox.trl("a/b")])


def test_a_server_without_query_event_system_is_refused_with_the_version_needed() -> None:
    server = MonitoredServer("dserver/Old/1", ("old/dev/1",))

    with pytest.raises(MonitorSetupError) as raised:
        check_query_support(server, ["Init", "State", "Status", "ZmqEventSubscriptionChange"])

    message = str(raised.value)
    assert "dserver/Old/1 (from old/dev/1)" in message
    assert "cppTango 10.0" in message
    assert "PyTango 10.0" in message
    check_query_support(server, ["QueryEventSystem"])


def test_a_poll_follows_events_from_publisher_to_subscriber(event_servers: EventServers) -> None:
    with Collector(servers_of(event_servers.sandbox)) as collector:
        assert collector.check_support() == []
        history = PollHistory()
        assert collector.set_perf_monitoring(True) == {}
        try:
            history.add(collector.poll())
            event_servers.increment(10)
            publisher, subscriber = history.add(collector.poll()).entries
        finally:
            collector.set_perf_monitoring(False)
        after = collector.poll()

    assert publisher.report is not None
    assert subscriber.report is not None
    (published,) = publisher.report.published
    assert published.stream.endswith(f"{COUNTER}/value.change")
    assert published.counter.delta == 10
    (received,) = subscriber.report.subscription_changes
    assert received.event_count is not None
    assert received.event_count.delta == 10
    assert publisher.report.server_perf is not None
    push_time = publisher.report.server_perf.get(Metric.PUSH_TIME)
    assert push_time is not None
    assert push_time.count == 10
    assert subscriber.report.client_perf is not None
    assert all(r.snapshot and r.snapshot.perf_monitoring is False for r in after.replies)


def test_a_server_not_running_yet_is_polled_with_an_error(
    tango_sandbox: TangoSandbox,
) -> None:
    tango_sandbox.add_device("MonitorIdle/1", "Counter", "test/monitor/idle")
    try:
        (idle,) = resolve_servers([tango_sandbox.trl("test/monitor/idle")])
        with Collector([idle]) as collector:
            assert collector.check_support() == [idle]
            replies = [collector.poll().replies[0] for _ in range(2)]
    finally:
        tango_sandbox.delete_server("MonitorIdle/1")

    for reply in replies:
        assert reply.snapshot is None
        assert reply.data is None
        assert reply.error is not None
        # Not cppTango's "connection request was delayed", which hides the reason.
        assert reply.error.startswith("API_DeviceNotExported: Device dserver/monitoridle/1 ")


def test_a_frozen_server_holds_up_neither_the_others_nor_the_exit(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    ice, ice_device = start_ice(sandbox_servers)
    servers = resolve_servers(
        [event_servers.sandbox.trl(ice_device), event_servers.sandbox.trl(RELAY)]
    )
    collector = Collector(servers)  # the 1 s timeout: ample for the server that answers
    try:
        connect(collector)  # while they answer
        with frozen(event_servers.sandbox, ice):
            polls = [collector.poll() for _ in range(3)]
            collector.close()
    finally:
        collector.close()

    # Waiting for the frozen server would have ended in cppTango's own timeout error.
    for poll in polls:
        frozen_reply, answering = poll.replies
        assert frozen_reply.error is not None
        assert frozen_reply.error.startswith("no answer for ")
        assert answering.snapshot is not None
    assert not [t for t in threading.enumerate() if t.name.startswith("milonga-monitor")]


def test_a_frozen_server_runs_nothing_from_the_start_of_the_block(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    """SIGSTOP stops a process's threads one by one, after `kill` has returned: until the
    last one stops, the server may still answer a call."""
    sandbox = event_servers.sandbox
    ice, _ = start_ice(sandbox_servers)
    pid = sandbox.database().get_device_info(f"dserver/{ice}").pid

    for _ in range(100):  # the race is lost in a few rounds in 100, even with cores busy
        with frozen(sandbox, ice):
            states = thread_states(pid)
        assert set(states) == {"T"}, f"threads of the frozen server not stopped: {states}"


@contextlib.contextmanager
def query_under_way(
    sandbox: TangoSandbox, sandbox_servers: SandboxServers
) -> Iterator[tuple[Collector, MonitoredServer, Poll, int]]:
    """A `Collector` of one server of its own, connected while it answered; inside the
    block that server is frozen with a query to it under way, holding its one worker.
    Yields the collector, the server, the poll that left the query, and the server's pid."""
    ice, ice_device = start_ice(sandbox_servers)
    (server,) = resolve_servers([sandbox.trl(ice_device)])
    pid = sandbox.database().get_device_info(f"dserver/{ice}").pid
    collector = Collector([server])
    try:
        connect(collector)  # while it answers
        with frozen(sandbox, ice):
            busy = collector.poll()
            (reply,) = busy.replies
            assert reply.error is not None, "the frozen server answered"
            yield collector, server, busy, pid
    finally:
        collector.close()


def test_a_process_is_looked_up_in_the_database_even_while_its_server_is_busy(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    with query_under_way(event_servers.sandbox, sandbox_servers) as (collector, server, busy, pid):
        processes = collector.processes()

    (reply,) = busy.replies
    assert reply.error is not None
    assert reply.error.startswith("no answer for ")
    # Only the database is asked: neither the server nor the query under way to it matter.
    assert (processes[server.admin] or "").startswith(f"pid {pid}, started ")


def test_a_server_with_a_call_under_way_is_not_called_again(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    with query_under_way(event_servers.sandbox, sandbox_servers) as (collector, server, _, _):
        errors = collector.set_perf_monitoring(False)

    # Not queued behind the query, to be sent once that ends whatever came meanwhile.
    assert not errors[server.admin].sent
    assert not errors[server.admin].answered


def test_patience_sends_no_call_that_could_outlast_it(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    """So that stopping the monitor never waits for calls beyond its patience."""
    # The query under way lasts the whole call limit.
    with query_under_way(event_servers.sandbox, sandbox_servers) as (collector, server, _, _):
        patient = collector.set_perf_monitoring(False, patience=collector.call_limit)
        next_one = collector.set_perf_monitoring(False)

    assert collector.call_limit == 5.0  # the 1 s timeout, cppTango's 3 s, the timeout
    assert not patient[server.admin].answered
    assert patient[server.admin].reason.startswith("no answer for ")
    # Nothing was under way any more: the next call was sent (and is not answered).
    assert next_one[server.admin].sent
    assert not next_one[server.admin].answered


class InterruptedWhileAsking(Collector):
    """A `Collector` that, once `armed`, sends Ctrl-C to the main thread as its worker
    starts asking ``server``: a user interrupting a poll under way."""

    def __init__(self, servers: list[MonitoredServer], server: str, **options: Any) -> None:
        super().__init__(servers, **options)
        self._server = server
        self.armed = threading.Event()

    def _proxy(self, server: MonitoredServer) -> tango.DeviceProxy:
        if server.admin == self._server and self.armed.is_set():
            self.armed.clear()
            main = threading.main_thread().ident
            assert main is not None
            signal.pthread_kill(main, signal.SIGINT)
        return super()._proxy(server)


def test_a_poll_interrupted_while_a_server_is_frozen_leaves_one_call_to_it(
    event_servers: EventServers, sandbox_servers: SandboxServers
) -> None:
    sandbox = event_servers.sandbox
    ice, ice_device = start_ice(sandbox_servers)
    frozen_one, answering = resolve_servers([sandbox.trl(ice_device), sandbox.trl(RELAY)])
    collector = InterruptedWhileAsking([frozen_one, answering], answering.admin)
    try:
        connect(collector)  # while they answer
        with frozen(sandbox, ice):
            collector.armed.set()
            with pytest.raises(KeyboardInterrupt):
                collector.poll()  # interrupted while it waits for the frozen server
            # The interrupted poll's call to the other server may still be ending.
            polls = [collector.poll()]

            def answered_again() -> bool:
                if polls[-1].replies[1].error is None:
                    return True
                polls.append(collector.poll())
                return False

            wait_until(answered_again, "a poll that the answering server answers")
    finally:
        collector.close()

    # A second query to the frozen server would have taken the other server's worker.
    frozen_reply, answer = polls[-1].replies
    assert answer.error is None
    assert answer.snapshot is not None
    assert frozen_reply.error is not None
    assert frozen_reply.error.startswith("no answer for ")


class SlowToAsk(Collector):
    """A `Collector` that waits `delay` seconds before each query, like a slow link."""

    delay = 0.0

    def _proxy(self, server: MonitoredServer) -> tango.DeviceProxy:
        time.sleep(self.delay)  # the slow link itself, not a wait for something
        return super()._proxy(server)


def test_servers_queried_in_turn_each_get_the_timeout(event_servers: EventServers) -> None:
    timeout = 1.0
    in_turn = SlowToAsk(servers_of(event_servers.sandbox), timeout=timeout, max_workers=1)
    with in_turn:
        connect(in_turn)  # a query now takes a fraction of a millisecond
        in_turn.delay = 0.6 * timeout
        poll = in_turn.poll()  # the second query starts after more than the timeout

    assert [reply.error for reply in poll.replies] == [None, None]


def test_the_api_queries_a_server_and_switches_its_sampling(event_servers: EventServers) -> None:
    counter = event_servers.sandbox.trl(COUNTER)

    set_perf_monitoring(counter, True)
    try:
        on = query_server(counter)
    finally:
        set_perf_monitoring(counter, False)
    off = query_server(counter)

    assert on.perf_monitoring is True
    assert off.perf_monitoring is False
    assert off.server is not None
    assert any(stream.endswith(f"{COUNTER}/value.change") for stream in off.server.publishers)


def test_the_api_queries_this_process(event_servers: EventServers) -> None:
    counter = event_servers.sandbox.proxy(COUNTER)
    subscription = counter.subscribe_event("value", tango.EventType.CHANGE_EVENT, lambda _: None)
    try:
        snapshot = query_process()
    finally:
        counter.unsubscribe_event(subscription)

    assert snapshot.client is not None
    assert any(
        topic.endswith(f"{COUNTER}/value.idl5_change") for topic in snapshot.client.subscriptions
    )
