"""`TangoEvents` in this process, against a real Counter: what a test author gets wrong,
error events, and what is left once it is closed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import tango

from milonga.monitor.collector import query_process, set_process_perf_monitoring
from milonga.sandbox import TangoSandbox
from milonga.scheduler.streams import stream_key, subscription_failed
from milonga.testing import EventAssertionError, SandboxServers, TangoEvents, wait_until
from milonga.testing.recorder import _decoded, _Recording, _sent_by_tango
from tests.scheduler.helpers import client_topics

COUNTER = "tests.devices.counter"
CHANGE = tango.EventType.CHANGE_EVENT
ARCHIVE = tango.EventType.ARCHIVE_EVENT
ATTEMPT_SECONDS = 2.0
"""Long enough for a first attempt to subscribe to a server that is not running to fail:
it takes milliseconds (a refused connection)."""
NOT_RUNNING = (
    "before PyTango 10.1, a server not running yet is told by an error event with no "
    "event_reason, which no rule tells from the attribute's own first event"
)


@pytest.fixture
def counter(sandbox_servers: SandboxServers) -> str:
    """The full TRL of a running Counter, test/recorder/1, whose value starts at 5."""
    trl = sandbox_servers.add_device("Recorder/1", "Counter", "test/recorder/1", {"Start": 5})
    sandbox_servers.start("Recorder/1", COUNTER)
    return trl


@pytest.fixture
def recorder() -> Iterator[TangoEvents]:
    """A recorder with the suite's safety timeout, closed after the test."""
    events = TangoEvents(60.0)
    try:
        yield events
    finally:
        events.close()


def test_events_of_each_type_are_told_apart(counter: str, recorder: TangoEvents) -> None:
    recorder.subscribe(counter, "value", CHANGE)
    recorder.subscribe(counter, "value", ARCHIVE)
    recorder.subscribe(counter, "VALUE", CHANGE)  # the same stream: nothing new
    tango.DeviceProxy(counter).Increment()
    with pytest.raises(ValueError, match=r"several types .*ARCHIVE_EVENT, CHANGE_EVENT"):
        recorder.assert_event(counter, "value", value=6)
    for event_type in (CHANGE, ARCHIVE):
        event = recorder.assert_event(counter, "value", value=6, event_type=event_type)
        kind = event_type.name.removesuffix("_EVENT").lower()
        assert event.stream == f"test/recorder/1/value.{kind}"
    values = [event.value for event in recorder.events(counter, "value", CHANGE)]
    assert values == [5, 6]


def test_a_stream_not_subscribed_says_what_to_do(counter: str, recorder: TangoEvents) -> None:
    with pytest.raises(ValueError, match=r"call tango_events.subscribe\(device, attr_name\)"):
        recorder.assert_event(counter, "value", value=5)
    with pytest.raises(ValueError, match=r"value.archive is not recorded"):
        recorder.events(counter, "value", ARCHIVE)


def test_bad_arguments_are_refused_saying_what_was_expected(
    counter: str, recorder: TangoEvents
) -> None:
    recorder.subscribe(counter, "value")
    with pytest.raises(ValueError, match="within must be a finite number of seconds >= 0"):
        recorder.assert_event(counter, "value", within=-1)
    with pytest.raises(TypeError, match="within must be a number of seconds, got str"):
        recorder.assert_event(counter, "value", within="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="after must be a time"):
        recorder.assert_event(counter, "value", after="now")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"event_type must be a tango\.EventType"):
        recorder.subscribe(counter, "value", "change")  # type: ignore[arg-type]


def test_after_an_event_of_another_stream_is_refused(counter: str, recorder: TangoEvents) -> None:
    recorder.subscribe(counter, "value", CHANGE)
    recorder.subscribe(counter, "value", ARCHIVE)
    archived = recorder.assert_event(counter, "value", event_type=ARCHIVE)
    with pytest.raises(ValueError, match=r"is not an event of test/recorder/1/value\.change"):
        recorder.assert_event(counter, "value", event_type=CHANGE, after=archived)


def test_a_device_that_never_runs_fails_the_subscription(tango_sandbox: TangoSandbox) -> None:
    with TangoEvents(0.5) as recorder, pytest.raises(EventAssertionError) as failure:
        recorder.subscribe(tango_sandbox.trl("test/recorder/nowhere"), "value")
    assert str(failure.value).startswith(
        "test/recorder/nowhere/value.change was not connected within 0.5 s"
    )
    assert "raise the ini option tango_event_timeout" in str(failure.value)


@pytest.mark.requires_pytango10(NOT_RUNNING)
def test_a_defined_server_that_does_not_run_fails_the_subscription_saying_why(
    sandbox_servers: SandboxServers,
) -> None:
    trl = sandbox_servers.add_device("Recorder/3", "Counter", "test/recorder/3")
    with TangoEvents(ATTEMPT_SECONDS) as recorder, pytest.raises(EventAssertionError) as failure:
        recorder.subscribe(trl, "value")
    assert str(failure.value).startswith(
        f"test/recorder/3/value.change was not connected within {ATTEMPT_SECONDS:g} s; the "
        "last attempt failed with API_CantConnectToDevice"
    )


def test_an_error_event_is_recorded_with_its_error_and_matches_no_value() -> None:
    key = stream_key("tango://127.0.0.1:10000/test/recorder/1", "value", CHANGE)
    failure = tango.DevFailed(tango.DevError())
    failure.args[0].reason, failure.args[0].desc = "API_DeviceNotExported", "not\n exported"
    recorded = _decoded(
        _Recording(key, "test/recorder/1/value.change"), subscription_failed(key, failure)
    )
    assert recorded.error == "API_DeviceNotExported: not exported"
    assert recorded.value is None
    assert not recorded.matches(None)
    assert recorded.describe() == "error: API_DeviceNotExported: not exported"


@pytest.mark.requires_pytango10("ApiUtil.query_event_system needs PyTango 10.3")
def test_closing_leaves_no_subscription(counter: str) -> None:
    recorder = TangoEvents(60.0)
    recorder.subscribe(counter, "value")
    recorder.assert_event(counter, "value", value=5)
    assert any("test/recorder/1/value" in topic for topic in _topics())
    recorder.close()
    recorder.close()
    assert not any("test/recorder/1/value" in topic for topic in _topics())


@pytest.mark.requires_pytango10("ApiUtil.query_event_system needs PyTango 10.3")
def test_a_failure_message_leaves_the_process_performance_samples(
    counter: str, recorder: TangoEvents
) -> None:
    """The health check reports the samples of the test's whole call, failures included."""
    query_process()  # empties the samples taken so far
    set_process_perf_monitoring(True)
    try:
        recorder.subscribe(counter, "value")
        tango.DeviceProxy(counter).Increment()
        recorder.assert_event(counter, "value", value=6)
        with pytest.raises(EventAssertionError, match="reported no missed events"):
            recorder.assert_event(counter, "value", value=-1, within=0)
        client = query_process().client
    finally:
        set_process_perf_monitoring(False)
    assert client is not None
    assert client.perf, "the failure's message emptied the samples"


def test_times_in_failures_count_from_the_start_given(counter: str) -> None:
    with TangoEvents(60.0, started=time.time() - 100) as recorder:
        recorder.subscribe(counter, "value")
        with pytest.raises(EventAssertionError) as failure:
            recorder.assert_event(counter, "value", value=-1, within=0)
    (row,) = [line for line in str(failure.value).splitlines() if "ATTR_VALID" in line]
    assert float(row.split()[0]) >= 100


def _topics() -> list[str]:
    """The topics this process subscribes to, as cppTango counts them."""
    return list(client_topics())


@pytest.mark.requires_pytango10(NOT_RUNNING)
def test_failed_attempts_to_subscribe_are_not_taken_for_the_current_value(counter: str) -> None:
    """While a server is not running, the stream gets SubFail events, from cppTango
    (PyTango 10.1 and later) or from the scheduler; `subscribe` waits past them for the
    first event that tells of the stream, the current value or an error of its own.
    (Made here from events as both send them: a server started later is only found at
    cppTango's next retry, about 10 s on.)"""
    key = stream_key(counter, "value", CHANGE)
    recording = _Recording(key, "test/recorder/1/value.change")
    failure = tango.DevFailed(tango.DevError())
    failure.args[0].reason, failure.args[0].desc = "API_CantConnectToDevice", "not running"
    from_scheduler = subscription_failed(key, failure)
    from_tango = subscription_failed(key, failure)
    proxy = tango.DeviceProxy(counter)  # kept: the event does not own its device
    from_tango.device = proxy  # as cppTango's events name theirs
    value = tango.EventData()
    value.err, value.reception_date = False, tango.TimeVal.now()
    reading = tango.DeviceAttribute()
    reading.value, reading.quality = 7, tango.AttrQuality.ATTR_VALID  # type: ignore[attr-defined]
    value.attr_value = reading  # type: ignore[assignment]  # the stubs say None
    recorder = TangoEvents(60.0)
    try:
        for event in (from_scheduler, from_tango, value):
            recorder._record(recording, event)
        first = recorder._first(recording, 0, -math.inf, _sent_by_tango, 0)
    finally:
        recorder.close()
    assert first is not None
    assert (first.value, first.error) == (7, None)


@pytest.mark.requires_pytango10("ApiUtil.query_event_system needs PyTango 10.3")
def test_a_subscription_given_up_after_it_connected_is_withdrawn(
    counter: str, recorder: TangoEvents
) -> None:
    """What `subscribe` does when its time runs out just as the stream connects, or
    before its first event: nothing stays registered, and subscribing again starts
    afresh."""
    key = stream_key(counter, "value", CHANGE)
    connected = recorder._scheduler.register_event_callback(
        counter, "value", CHANGE, lambda event: None
    )
    connected.result(60)
    recorder._recordings[key] = _Recording(key, "test/recorder/1/value.change")
    recorder._withdraw(key, connected)
    wait_until(
        lambda: not any(topic.startswith("test/recorder/1/value.") for topic in client_topics()),
        "the stream to be unsubscribed once its only callback is withdrawn",
        60,
    )
    recorder.subscribe(counter, "value")
    assert [event.value for event in recorder.events(counter, "value")] == [5]
