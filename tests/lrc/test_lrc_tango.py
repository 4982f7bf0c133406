"""invoke_lrc against real devices in the sandbox: LrcDevice (v2) and a v1-only device."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import tango

from milonga import CallbackScheduler, default_scheduler, shutdown_default_scheduler
from milonga.lrc import (
    CommandRejectedError,
    LrcCallbackError,
    LrcInvocationError,
    LrcSubscription,
    MissingLrcInterfaceError,
    ResultCode,
    TaskStatus,
    UnexpectedResultCodeError,
    catchup,
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
)
from milonga.lrc.protocol import V1_ATTRIBUTES
from milonga.sandbox import TangoSandbox
from milonga.scheduler import UnknownStreamError
from milonga.testing import SandboxServers, wait_until
from tests.lrc.conftest import V2_SERVER, WAIT_SECONDS, Updates

Devices = dict[str, tango.DeviceProxy]
CHANGE = tango.EventType.CHANGE_EVENT
RESUBSCRIBE_SECONDS = 90.0
"""A safety net: cppTango's keep-alive thread checks heartbeats every 10 s, so it notices a
restarted server and resubscribes within about 20 s."""
RESTART_ATTEMPTS = 3
STUCK_CAP_SECONDS = 8 * WAIT_SECONDS  # longer than all the waits of a test together


@pytest.fixture
def scheduler() -> Iterator[CallbackScheduler]:
    with CallbackScheduler(thread_count=2, name="lrc-test") as sched:
        yield sched


class StuckCallback:
    """An ``lrc_callback`` that records each call in `updates`, then stays stuck until
    `release` is set, far longer than any wait of a test; `returned` tells whether a call
    has come back, so a test checks that rather than how long something took."""

    def __init__(self) -> None:
        self.updates = Updates()
        self.release = threading.Event()
        self.returned = threading.Event()
        self._stuck = threading.Event()

    def __call__(self, **kwargs: Any) -> None:
        self.updates(**kwargs)
        self._stuck.set()
        self.release.wait(STUCK_CAP_SECONDS)
        self.returned.set()

    def wait_until_stuck(self) -> None:
        assert self._stuck.wait(WAIT_SECONDS), "the lrc_callback was never called"


def _lrc_topics() -> dict[str, dict[str, Any]]:
    """This process's subscriptions to LRC attributes, from QueryEventSystem, by topic."""
    client = json.loads(tango.ApiUtil.instance().query_event_system())["client"] or {}
    return {
        topic.split("/", 3)[-1]: entry
        for topic, entry in client.get("event_callbacks", {}).items()
        if "/_lrcevent." in topic.lower() or "longrunningcommand" in topic.lower()
    }


@pytest.mark.usefixtures("lrc_anchor")
def test_success_reports_status_progress_and_result(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    updates = Updates()

    subscription = invoke_lrc(
        updates, lrc_devices["v2"], "Steps", (4,), callback_scheduler=scheduler
    )

    updates.wait_for_status(TaskStatus.COMPLETED)
    assert subscription.protocol_version == 2
    assert subscription.command_id.endswith("_Steps")
    assert updates.values("status") == [
        TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED
    ]  # fmt: skip
    assert updates.values("progress") == [25, 50, 75, 100]
    assert updates.values("result") == [{"steps": 4}]
    assert all(name.startswith("lrc-test-worker") for name in updates.threads)
    # Terminal status: the callbacks are gone, and with them the stream.
    wait_until(lambda: subscription.finished and not scheduler.stats().queues, "unsubscription")
    finished = json.loads(lrc_devices["v2"].lrcFinished[-1])
    assert (finished["uid"], finished["status"]) == (subscription.command_id, "COMPLETED")


@pytest.mark.usefixtures("lrc_anchor")
def test_failure_reports_failed_with_the_error(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    updates = Updates()

    invoke_lrc(updates, lrc_devices["v2"], "Fail", callback_scheduler=scheduler)

    updates.wait_for_status(TaskStatus.FAILED)
    assert updates.values("result") == [
        [ResultCode.FAILED, "ValueError: the hardware refused: limit switch engaged"]
    ]


@pytest.mark.usefixtures("lrc_anchor")
@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "CancelledError"])
def test_a_command_raising_what_is_not_an_exception_fails_and_the_next_one_runs(
    tango_sandbox: TangoSandbox,
    lrc_devices: Devices,
    scheduler: CallbackScheduler,
    kind: str,
) -> None:
    device = lrc_devices["v2"]
    escaping, following = Updates(), Updates()

    escape = invoke_lrc(escaping, device, "Escape", (kind,), callback_scheduler=scheduler)
    invoke_lrc(following, device, "Echo", ("after",), callback_scheduler=scheduler)

    escaping.wait_for_status(TaskStatus.FAILED)
    following.wait_for_status(TaskStatus.COMPLETED)
    assert escaping.values("result") == [
        [ResultCode.FAILED, f"{kind}: {kind} raised by the command"]
    ]
    assert following.values("result") == ["after"]
    logged = f"long running command Escape ({escape.command_id}) failed"
    wait_until(lambda: logged in tango_sandbox.server_output(V2_SERVER), "the failure's log")
    assert f"{kind}: {kind} raised by the command" in tango_sandbox.server_output(V2_SERVER)


@pytest.mark.usefixtures("lrc_anchor")
def test_full_queue_rejects_and_abort_ends_everything(
    lrc_devices: Devices, scheduler: CallbackScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    device = lrc_devices["v2"]
    running, *waiting = [Updates() for _ in range(3)]
    try:
        invoke_lrc(running, device, "Block", callback_scheduler=scheduler)
        running.wait_for_status(TaskStatus.IN_PROGRESS)
        for updates in waiting:  # the device queues at most two
            invoke_lrc(updates, device, "Block", callback_scheduler=scheduler)
        rejected = Updates()

        with pytest.raises(CommandRejectedError, match="2 commands already wait") as error:
            invoke_lrc(rejected, device, "Echo", ("late",), callback_scheduler=scheduler)

        assert "retry once one has finished" in error.value.reason
        assert "was rejected" in caplog.text
        assert len(device.lrcQueue) == 2
        aborting = Updates()
        invoke_lrc(aborting, device, "Abort", callback_scheduler=scheduler)
        for updates in (running, *waiting):
            updates.wait_for_status(TaskStatus.ABORTED)
        aborting.wait_for_status(TaskStatus.COMPLETED)
    finally:
        device.Abort()  # leave no Block running for the next test, whatever happened
    assert waiting[0].values("status") == [TaskStatus.QUEUED, TaskStatus.ABORTED]
    assert aborting.values("result") == [
        [ResultCode.OK, "aborted 2 waiting command(s) and the running one"]
    ]
    assert rejected.calls == []
    assert not device.lrcQueue


@pytest.mark.usefixtures("lrc_anchor")
def test_two_concurrent_invocations_are_kept_apart_by_command_id(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    updates = {text: Updates() for text in ("first", "second")}
    subscriptions: dict[str, LrcSubscription] = {}
    start = threading.Barrier(2)

    def invoke(text: str) -> None:
        start.wait()
        subscriptions[text] = invoke_lrc(
            updates[text], lrc_devices["v2"], "Echo", (text,), callback_scheduler=scheduler
        )

    threads = [threading.Thread(target=invoke, args=(text,)) for text in updates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)

    assert subscriptions["first"].command_id != subscriptions["second"].command_id
    for text, recorded in updates.items():
        recorded.wait_for_status(TaskStatus.COMPLETED)
        assert recorded.values("result") == [text]
        assert recorded.values("status") == [
            TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED
        ]  # fmt: skip


@pytest.mark.usefixtures("lrc_anchor")
def test_a_v1_only_device_is_served_over_its_three_attributes(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    updates = Updates()

    subscription = invoke_lrc(
        updates, lrc_devices["v1"], "Steps", (2,), callback_scheduler=scheduler
    )

    updates.wait_for_status(TaskStatus.COMPLETED)
    assert subscription.protocol_version == 1
    assert updates.values("progress") == [50, 100]
    assert updates.values("result") == [{"steps": 2}]
    # One queue for the three attributes keeps the device's order: result, then status.
    assert updates.calls[-2:] == [{"result": {"steps": 2}}, {"status": TaskStatus.COMPLETED}]
    wait_until(lambda: not scheduler.stats().queues, "the v1 streams to be unsubscribed")


@pytest.mark.parametrize(
    "case", [("v2", "Echo", "quiet", "quiet"), ("v1", "Steps", 2, {"steps": 2})], ids=["v2", "v1"]
)
def test_an_end_whose_updates_never_arrive_is_learnt_from_the_device(
    lrc_devices: Devices,
    scheduler: CallbackScheduler,
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, str, object, object],
) -> None:
    version, command, argument, result = case
    device = lrc_devices[version]
    updates = Updates()
    device.MuteUpdates(True)  # as if every update were lost in a new subscription's start
    try:
        subscription = invoke_lrc(
            updates, device, command, (argument,), callback_scheduler=scheduler
        )
        updates.wait_for_status(TaskStatus.COMPLETED)
    finally:
        device.MuteUpdates(False)

    assert updates.calls == [{"status": TaskStatus.COMPLETED, "result": result}]
    assert subscription.finished
    assert "none of its updates arrived" in caplog.text


@pytest.mark.usefixtures("lrc_anchor")
def test_a_slow_lrc_callback_does_not_delay_another_stream(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    device = lrc_devices["v2"]
    slow = StuckCallback()
    ticks: list[int] = []

    def record_tick(event: tango.EventData) -> None:
        reading: Any = event.attr_value
        ticks.append(reading.value)

    scheduler.register_event_callback(device, "ticks", CHANGE, record_tick).result(WAIT_SECONDS)
    first = ticks[-1] if ticks else device.ticks
    try:
        subscription = invoke_lrc(slow, device, "Echo", ("x",), callback_scheduler=scheduler)
        slow.wait_until_stuck()
        for _ in range(3):
            device.Tick()

        wait_until(lambda: ticks[-1:] == [first + 3], "ticks while the lrc_callback is stuck")
        assert not slow.returned.is_set(), "the ticks came only once the lrc_callback returned"
        assert not subscription.finished
    finally:
        slow.release.set()
    wait_until(lambda: subscription.finished, "the slow invocation to finish")


@pytest.mark.usefixtures("lrc_anchor")
def test_unsubscribing_while_the_callback_runs_returns_at_once_and_ends_the_calls(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    device = lrc_devices["v2"]
    slow = StuckCallback()
    updates = slow.updates

    try:
        subscription = invoke_lrc(slow, device, "Block", callback_scheduler=scheduler)
        slow.wait_until_stuck()
        unsubscribing = threading.Thread(target=subscription.unsubscribe_lrc_events)
        unsubscribing.start()
        unsubscribing.join(WAIT_SECONDS)  # a safety net: the callback stays stuck for longer

        assert not unsubscribing.is_alive(), "unsubscribe_lrc_events waited for the callback"
        assert not slow.returned.is_set(), "unsubscribe_lrc_events waited for the callback"
        assert subscription.finished
    finally:
        slow.release.set()
        # Abort's updates queue behind Block's on the same stream: once Abort completes,
        # the callback has had every chance to see Block's IN_PROGRESS and ABORTED.
        aborting = Updates()
        invoke_lrc(aborting, device, "Abort", callback_scheduler=scheduler)
    aborting.wait_for_status(TaskStatus.COMPLETED)
    assert updates.values("status") == [TaskStatus.QUEUED]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_connected_interface_makes_invocations_subscribe_nothing(
    lrc_devices: Devices, scheduler: CallbackScheduler, version: str
) -> None:
    device = lrc_devices[version]
    command, argument = ("Echo", ("x",)) if version == "v2" else ("Steps", (1,))
    # Pushed per invocation: v2 QUEUED, IN_PROGRESS, COMPLETED with result; v1 those
    # three statuses, one progress and the result.
    pushed = 3 if version == "v2" else 5
    wait_until(lambda: _lrc_topics() == {}, "earlier tests' LRC streams to be unsubscribed")
    connect_lrc_interface(device, scheduler)
    before = _lrc_topics()
    assert before
    assert all(entry["callback_count"] == 1 for entry in before.values())
    received = 0

    for _ in range(3):
        updates = Updates()
        subscription = invoke_lrc(updates, device, command, argument, callback_scheduler=scheduler)
        updates.wait_for_status(TaskStatus.COMPLETED)
        wait_until(lambda: subscription.finished, "the invocation to end")  # noqa: B023
        received += pushed

    after = _lrc_topics()
    assert after.keys() == before.keys()
    assert all(entry["callback_count"] == 1 for entry in after.values())
    # One subscription throughout: a new one would have counted only its own events.
    counted = sum(e["event_count"] for e in after.values()) - sum(
        e["event_count"] for e in before.values()
    )
    assert counted >= received
    assert all(entry["last_resubscribed"] is None for entry in after.values())
    disconnect_lrc_interface(device, scheduler)
    wait_until(lambda: _lrc_topics() == {}, "the LRC streams to be unsubscribed")
    with pytest.raises(UnknownStreamError, match="call connect_lrc_interface"):
        disconnect_lrc_interface(device, scheduler)


@pytest.mark.usefixtures("lrc_anchor")
def test_without_a_connected_interface_each_invocation_unsubscribes(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    # The anchor holds one subscription to the topic; the invocation adds its own.
    topic = "test/lrc/v2/_lrcevent.idl5_change"
    assert _lrc_topics()[topic]["callback_count"] == 1
    updates = Updates()

    subscription = invoke_lrc(
        updates, lrc_devices["v2"], "Echo", ("x",), callback_scheduler=scheduler
    )

    assert _lrc_topics()[topic]["callback_count"] == 2
    updates.wait_for_status(TaskStatus.COMPLETED)
    assert subscription.finished  # already within the call that passed COMPLETED
    wait_until(
        lambda: _lrc_topics()[topic]["callback_count"] == 1,
        "the invocation's subscription to end, a grace second after the last update",
    )


@pytest.mark.usefixtures("lrc_anchor")
def test_the_default_scheduler_is_used_without_one(lrc_devices: Devices) -> None:
    updates = Updates()
    try:
        invoke_lrc(updates, lrc_devices["v2"], "Echo", ("x",))
        updates.wait_for_status(TaskStatus.COMPLETED)
        assert all(name.startswith(default_scheduler().name) for name in updates.threads)
    finally:
        shutdown_default_scheduler()


@pytest.mark.usefixtures("lrc_anchor")
def test_a_raising_callback_is_logged_and_still_gets_later_updates(
    lrc_devices: Devices, scheduler: CallbackScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    updates = Updates()

    def clumsy(**kwargs: Any) -> None:
        updates(**kwargs)
        raise RuntimeError("bug in the client")

    with caplog.at_level(logging.ERROR, "milonga.lrc"):
        invoke_lrc(clumsy, lrc_devices["v2"], "Echo", ("x",), callback_scheduler=scheduler)
        updates.wait_for_status(TaskStatus.COMPLETED)

    assert "lrc_callback of Echo" in caplog.text
    assert "bug in the client" in caplog.text
    wait_until(lambda: not scheduler.stats().queues, "unsubscription after the last update")


@pytest.mark.usefixtures("lrc_anchor")
def test_a_callback_raising_at_every_update_is_logged_rate_limited_then_summed_up(
    lrc_devices: Devices, scheduler: CallbackScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    updates = Updates()

    def clumsy(**kwargs: Any) -> None:
        updates(**kwargs)
        raise RuntimeError("bug in the client")

    def failures() -> tuple[list[logging.LogRecord], int]:
        """The records with a traceback, and how many failures the others say were left out."""
        records = [r for r in caplog.records if "lrc_callback of Steps" in r.getMessage()]
        left_out = [re.search(r"(\d+) more failures not logged", r.getMessage()) for r in records]
        return [r for r in records if r.exc_info], sum(int(m[1]) for m in left_out if m)

    def accounted() -> bool:
        tracebacks, left_out = failures()
        return len(tracebacks) + left_out == len(updates.calls)

    with caplog.at_level(logging.ERROR, "milonga.lrc"):
        invoke_lrc(clumsy, lrc_devices["v2"], "Steps", (100,), callback_scheduler=scheduler)
        updates.wait_for_status(TaskStatus.COMPLETED)
        wait_until(accounted, "every failure to be logged or counted")

    tracebacks, left_out = failures()
    assert len(updates.calls) >= 100
    # At most one traceback per 10 s: the first, then counts of those left out.
    assert len(tracebacks) <= len(updates.calls) // 10, [r.getMessage() for r in tracebacks]
    assert left_out > 0
    assert "bug in the client" in (tracebacks[0].exc_text or "")


def test_a_callback_raising_system_exit_leaves_the_catch_up_thread_running(
    lrc_devices: Devices, scheduler: CallbackScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    device = lrc_devices["v2"]

    def leaving(updates: Updates) -> Callable[..., None]:
        def callback(**kwargs: Any) -> None:
            updates(**kwargs)
            raise SystemExit("the client's callback exits")

        return callback

    device.MuteUpdates(True)  # only the catch-up thread can tell how the commands ended
    try:
        for text in ("first", "second"):
            updates = Updates()
            invoke_lrc(leaving(updates), device, "Echo", (text,), callback_scheduler=scheduler)
            updates.wait_for_status(TaskStatus.COMPLETED)
    finally:
        device.MuteUpdates(False)

    assert "lrc_callback of Echo" in caplog.text
    assert "the client's callback exits" in caplog.text


def test_errors_before_the_call_leave_nothing_subscribed(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    def no_kwargs(status: Any = None) -> None: ...

    with pytest.raises(LrcCallbackError):
        invoke_lrc(no_kwargs, lrc_devices["v2"], "Echo", ("x",), callback_scheduler=scheduler)
    with pytest.raises(LrcInvocationError, match="check the command name"):
        invoke_lrc(Updates(), lrc_devices["v2"], "NoSuchCommand", callback_scheduler=scheduler)
    with pytest.raises(UnexpectedResultCodeError, match="check that Tick is a long running"):
        invoke_lrc(Updates(), lrc_devices["v2"], "Tick", callback_scheduler=scheduler)
    with pytest.raises(LrcInvocationError, match="PyTango could not call Echo"):
        invoke_lrc(Updates(), lrc_devices["v2"], "Echo", ("☃",), callback_scheduler=scheduler)

    wait_until(lambda: not scheduler.stats().queues, "every stream to be unsubscribed")


def test_a_scheduler_that_is_shut_down_is_named_and_nothing_is_called(
    lrc_devices: Devices,
) -> None:
    device = lrc_devices["v2"]
    scheduler = CallbackScheduler(name="lrc-gone")
    scheduler.shutdown()
    finished_before = len(device.lrcFinished or ())

    with pytest.raises(LrcInvocationError, match="lrc-gone is shut down, so Echo was not"):
        invoke_lrc(Updates(), device, "Echo", ("x",), callback_scheduler=scheduler)
    with pytest.raises(LrcInvocationError, match="lrc-gone is shut down"):
        connect_lrc_interface(device, scheduler)

    assert len(device.lrcFinished or ()) == finished_before


@pytest.mark.usefixtures("lrc_anchor")
def test_shutting_the_scheduler_down_ends_an_invocation_and_its_interface(
    lrc_devices: Devices,
) -> None:
    device = lrc_devices["v2"]
    scheduler = CallbackScheduler(name="lrc-closing")
    connect_lrc_interface(device, scheduler)
    updates = Updates()
    try:
        subscription = invoke_lrc(updates, device, "Block", callback_scheduler=scheduler)
        updates.wait_for_status(TaskStatus.IN_PROGRESS)

        scheduler.shutdown()

        assert subscription.finished
        subscription.unsubscribe_lrc_events()  # nothing left to unregister: no error
        disconnect_lrc_interface(device, scheduler)  # the shutdown disconnected it
    finally:
        device.Abort()


def test_an_unreachable_device_raises_naming_it(
    sandbox_servers: SandboxServers, scheduler: CallbackScheduler
) -> None:
    sandbox_servers.add_device("LrcDown/1", "LrcTester", "test/lrc/down")  # never started
    proxy = sandbox_servers.sandbox.proxy("test/lrc/down")

    with pytest.raises(LrcInvocationError, match="check that its device server is running"):
        invoke_lrc(Updates(), proxy, "Echo", ("x",), callback_scheduler=scheduler)
    with pytest.raises(LrcInvocationError, match="test/lrc/down"):
        connect_lrc_interface(proxy, scheduler)

    assert not scheduler.stats().queues


def test_a_device_without_the_lrc_interface_is_refused_at_once_and_nothing_is_called(
    sandbox_servers: SandboxServers,
    scheduler: CallbackScheduler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = "LrcPlain/1"
    trl = sandbox_servers.add_device(server, "Counter", "test/lrc/plain")
    sandbox_servers.start(server, "tests.devices.counter")
    proxy = tango.DeviceProxy(trl)

    with pytest.raises(MissingLrcInterfaceError) as error:
        invoke_lrc(Updates(), proxy, "Increment", callback_scheduler=scheduler)
    with pytest.raises(MissingLrcInterfaceError):
        connect_lrc_interface(proxy, scheduler)

    message = str(error.value)
    assert "test/lrc/plain lacks the long-running-command interface" in message
    assert "lrcProtocolVersions (protocol v2)" in message
    assert ", ".join(V1_ATTRIBUTES) + " (protocol v1)" in message
    assert "nothing was subscribed or called" in message
    assert proxy.value == 0, "Increment was called"
    assert scheduler.stats().queues == ()
    assert "did not reply" not in caplog.text


def test_an_interface_that_never_connects_says_why_and_no_update_claims_a_call(
    sandbox_servers: SandboxServers,
    scheduler: CallbackScheduler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = "LrcUnpublished/1"
    trl = sandbox_servers.add_device(server, "LrcV1Unpublished", "test/lrc/unpublished")
    sandbox_servers.start(server, "tests.devices.lrc_v1")
    proxy = tango.DeviceProxy(trl)
    updates = Updates()

    with pytest.raises(LrcInvocationError, match="so Steps was not called") as error:
        invoke_lrc(updates, proxy, "Steps", (1,), callback_scheduler=scheduler)

    assert "did not reply" not in caplog.text
    assert updates.calls == []
    assert not proxy.longRunningCommandStatus, "Steps was called"
    assert "(last error: API_AttributePollingNotStarted" in str(error.value)
    wait_until(lambda: not scheduler.stats().queues, "every stream to be unsubscribed")


@pytest.mark.usefixtures("lrc_anchor")
def test_init_while_a_command_runs_aborts_it_and_reports_it(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    device = lrc_devices["v2"]
    updates = Updates()
    invoke_lrc(updates, device, "Block", callback_scheduler=scheduler)
    updates.wait_for_status(TaskStatus.IN_PROGRESS)

    device.Init()

    # Pushing ABORTED needs the device monitor that Init holds: without
    # allow_internal_threads the push would time out after 3.2 s and the update be lost.
    updates.wait_for_status(TaskStatus.ABORTED)


def test_nothing_is_called_once_the_scheduler_is_shut_down_not_even_the_catch_up(
    lrc_devices: Devices,
) -> None:
    device, updates = lrc_devices["v2"], Updates()
    catch_up_ran = threading.Event()
    device.MuteUpdates(True)  # nothing arrives: only the catch-up could call
    try:
        with CallbackScheduler(name="lrc-shut") as scheduler:
            invoke_lrc(updates, device, "Echo", ("late",), callback_scheduler=scheduler)
        # The catch-up thread runs its actions in time order: this one comes after it.
        catchup.call_later(catchup.CATCH_UP_SECONDS + 0.2, catch_up_ran.set)
        assert catch_up_ran.wait(WAIT_SECONDS)
    finally:
        device.MuteUpdates(False)

    assert updates.calls == []


@pytest.mark.usefixtures("lrc_anchor")
def test_a_v1_device_republishing_its_lists_repeats_no_update(
    lrc_devices: Devices, scheduler: CallbackScheduler
) -> None:
    device, holding, stepping = lrc_devices["v1"], Updates(), Updates()
    try:
        invoke_lrc(holding, device, "Hold", callback_scheduler=scheduler)
        holding.wait_for(lambda u: u.values("progress") == [1], "Hold to run")
        # Steps waits behind Hold: its QUEUED comes in a status list that repeats Hold's
        # IN_PROGRESS, and Hold's COMPLETED in one that repeats Steps' QUEUED.
        invoke_lrc(stepping, device, "Steps", (100,), callback_scheduler=scheduler)
        stepping.wait_for_status(TaskStatus.QUEUED)
    finally:
        device.Release()
    holding.wait_for_status(TaskStatus.COMPLETED)
    stepping.wait_for_status(TaskStatus.COMPLETED)

    # Both commands' updates together fit in the streams' queue: none can be dropped.
    every_status = [TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED]
    assert holding.values("status") == every_status
    assert holding.values("result") == ["released"]
    assert stepping.values("status") == every_status
    assert stepping.values("progress") == list(range(1, 101))


class StreamNews:
    """A raw Tango callback that notes whether each event of a stream is an error or a value.

    It runs on Tango's own threads: when cppTango's keep-alive thread notices a restarted
    server, it calls it at once with an error event, then, once it has resubscribed, with
    the value it read from the new server.
    """

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, event: tango.EventData) -> None:
        with self._changed:
            self.kinds.append("error" if event.err else "value")
            self._changed.notify_all()

    def noticed_since(self, start: int) -> bool:
        """Whether an error event came after the first ``start`` events."""
        with self._changed:
            return "error" in self.kinds[start:]

    def wait_for_resubscription(self, start: int) -> None:
        """Wait until, after the first ``start`` events, an error event came and then a value:
        Tango noticed that the server was gone and subscribed to it again."""

        def resubscribed() -> bool:
            after = self.kinds[start:]
            return "error" in after and after[-1] == "value"

        with self._changed:
            assert self._changed.wait_for(resubscribed, RESUBSCRIBE_SECONDS), (
                f"Tango never resubscribed; events since the restart: {self.kinds[start:]}"
            )


def _finished_on_device(device: tango.DeviceProxy, command_id: str) -> bool:
    return any(json.loads(entry)["uid"] == command_id for entry in device.lrcFinished or ())


def _invoke_twice_unheard(
    sandbox: TangoSandbox,
    server: str,
    device: tango.DeviceProxy,
    scheduler: CallbackScheduler,
    news: StreamNews,
) -> tuple[Updates, int]:
    """Restart ``server``, then run Echo "first" and Echo "second" on ``device`` to their end
    before Tango notices the restart: the interface still listens to the old server, so
    every update of both is lost.  Return the first's updates and how many events ``news``
    had before the restart.

    Tango notices at a check of its keep-alive thread, every 10 s.  If one came before both
    commands ended, wait until Tango has resubscribed and start again, just after a check.
    """
    for _ in range(RESTART_ATTEMPTS):
        start = len(news.kinds)
        sandbox.restart_server(server)
        first, second = Updates(), Updates()
        calls = [
            invoke_lrc(updates, device, "Echo", (text,), callback_scheduler=scheduler)
            for updates, text in ((first, "first"), (second, "second"))
        ]
        last = calls[-1].command_id  # commands run in turn: the first ended before it
        wait_until(partial(_finished_on_device, device, last), "both commands' end")
        if not news.noticed_since(start):
            return first, start
        for call in calls:
            call.unsubscribe_lrc_events()
        news.wait_for_resubscription(start)
    pytest.fail(f"Tango noticed the restart before the commands ended {RESTART_ATTEMPTS} times")


def test_a_command_whose_updates_a_server_restart_lost_still_ends(
    sandbox_servers: SandboxServers, scheduler: CallbackScheduler
) -> None:
    server = "LrcTester/restart"
    trl = sandbox_servers.add_device(server, "LrcTester", "test/lrc/restart")
    sandbox_servers.start(server, "tests.devices.lrc_device")
    device = tango.DeviceProxy(trl)
    connect_lrc_interface(device, scheduler)
    news = StreamNews()
    held = device.subscribe_event("_lrcEvent", CHANGE, news)
    try:
        first, start = _invoke_twice_unheard(
            sandbox_servers.sandbox, server, device, scheduler, news
        )

        # On resubscribing, Tango sends only the second's last update: the first learns
        # its end from the device's records.
        news.wait_for_resubscription(start)
        first.wait_for_status(TaskStatus.COMPLETED)
    finally:
        device.unsubscribe_event(held)
    assert first.values("result") == ["first"]
