"""What the scheduler refuses at the call, and what it does with a failure no retry mends."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import tango

from milonga import CallbackScheduler
from milonga.testing import SandboxServers
from tests.scheduler.helpers import CHANGE, WAIT_SECONDS, Recorder

BAD_STREAMS = [
    pytest.param(("test/refused/1", "value", 999), TypeError, "event_type .* got 999", id="999"),
    pytest.param(
        ("test/refused/1", "value", "change"),
        TypeError,
        "event_type .* use tango.EventType.CHANGE_EVENT",
        id="string event type",
    ),
    pytest.param(("test/refused/1", "value", None), TypeError, "event_type .* got None", id="None"),
    pytest.param(
        ("test/refused/\udcff", "value", CHANGE),
        ValueError,
        "device .* unprintable character '\\\\udcff'",
        id="surrogate in device",
    ),
    pytest.param(
        ("test/refused/1", "\udcff", CHANGE),
        ValueError,
        "attr_name .* unprintable character '\\\\udcff'",
        id="surrogate in attribute",
    ),
]


@pytest.mark.parametrize(("stream", "error", "message"), BAD_STREAMS)
def test_a_bad_stream_is_refused_at_the_call(
    scheduler: CallbackScheduler,
    sandbox_servers: SandboxServers,
    stream: tuple[str, Any, Any],
    error: type[Exception],
    message: str,
) -> None:
    name, attr_name, event_type = stream
    trl = sandbox_servers.sandbox.trl(name)

    with pytest.raises(error, match=message):
        scheduler.register_event_callback(trl, attr_name, event_type, Recorder())
    with pytest.raises(error, match=message):
        scheduler.connect_event_stream(trl, attr_name, event_type)

    assert scheduler.stats().queues == ()


def test_a_callback_that_cannot_be_called_is_refused(
    scheduler: CallbackScheduler, counter: str
) -> None:
    with pytest.raises(TypeError, match=r"callback must be callable .* got 'show' \(str\)"):
        scheduler.register_event_callback(counter, "value", CHANGE, "show")  # type: ignore[arg-type]

    assert scheduler.stats().queues == ()


def test_a_queue_factory_that_returns_no_queue_is_refused(
    scheduler: CallbackScheduler, counter: str
) -> None:
    recorder = Recorder()

    with pytest.raises(
        TypeError, match=r"queue_factory returned \[\] \(list\) for stream tango://"
    ):
        scheduler.register_event_callback(
            counter,
            "value",
            CHANGE,
            recorder,
            queue_factory=lambda: [],  # type: ignore[arg-type,return-value]
        )
    with pytest.raises(TypeError, match=r"queue_factory must be callable .* got 64 \(int\)"):
        scheduler.connect_event_stream(counter, "value", CHANGE, queue_factory=64)  # type: ignore[arg-type]

    assert scheduler.stats().queues == ()
    scheduler.register_event_callback(counter, "value", CHANGE, recorder).result(WAIT_SECONDS)
    recorder.wait_for(lambda r: r.values == [5])


@pytest.mark.parametrize(
    ("size", "given"), [(2.5, r"2.5 \(float\)"), (None, "None"), (True, r"True \(bool\)")]
)
def test_a_queue_size_that_is_not_a_whole_number_is_refused(
    scheduler: CallbackScheduler, size: Any, given: str
) -> None:
    with pytest.raises(
        TypeError, match=f"queue_size must be a whole number of at least 1, got {given}"
    ):
        scheduler.allocate_queue(queue_size=size)


@pytest.mark.parametrize(
    ("count", "error", "message"),
    [
        (True, TypeError, r"must be a whole number of at least 1, got True \(bool\)"),
        (None, TypeError, "must be a whole number of at least 1, got None"),
        (2.0, TypeError, r"must be a whole number of at least 1, got 2.0 \(float\)"),
        (0, ValueError, "must be at least 1, got 0"),
    ],
)
def test_a_thread_count_that_is_not_a_positive_whole_number_is_refused(
    count: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"thread_count {message}"):
        CallbackScheduler(thread_count=count, name="refused-threads")

    assert not [t for t in threading.enumerate() if t.name.startswith("refused-threads")]


def test_an_unexpected_failure_fails_the_registration_and_is_logged(
    scheduler: CallbackScheduler,
    counter: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not a DevFailed, so no retry would mend it: a stand-in for a PyTango surprise.
    def refuse(*args: object, **kwargs: object) -> int:
        raise RuntimeError("PyTango refused the subscription")

    monkeypatch.setattr(tango.DeviceProxy, "subscribe_event", refuse)
    recorder = Recorder()

    with caplog.at_level(logging.ERROR, logger="milonga.scheduler"):
        failure = scheduler.register_event_callback(counter, "value", CHANGE, recorder).exception(
            WAIT_SECONDS
        )

    assert isinstance(failure, RuntimeError)
    assert str(failure) == "PyTango refused the subscription"
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.getMessage().startswith(f"cannot subscribe to {counter}/value.change")
    assert "PyTango refused the subscription" in (logged.exc_text or "")
    assert scheduler.stats().queues == (), "the stream is forgotten with its registration"
    assert recorder.events == []

    monkeypatch.undo()
    scheduler.register_event_callback(counter, "value", CHANGE, recorder).result(WAIT_SECONDS)
    recorder.wait_for(lambda r: r.values == [5])
