"""Rate-limited logging of callbacks that raise."""

from __future__ import annotations

import logging

import pytest

from milonga.scheduler.failures import CallbackFailureLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fail(log: CallbackFailureLog, key: str) -> bool:
    try:
        raise ValueError(f"bad event for {key}")
    except ValueError:
        return log.report(key, key)


def test_repeats_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = CallbackFailureLog(logging.getLogger("test.failures"), interval=10.0, clock=clock)

    logged = [_fail(log, "a") for _ in range(5)]
    clock.now = 10.0
    logged.append(_fail(log, "a"))

    assert logged == [True, False, False, False, False, True]
    assert "4 more failures not logged" in caplog.records[-1].getMessage()
    assert caplog.records[0].exc_text is not None
    assert "bad event for a" in caplog.records[0].exc_text


def test_each_callback_has_its_own_allowance() -> None:
    log = CallbackFailureLog(logging.getLogger("test.failures"), clock=FakeClock())

    assert [_fail(log, key) for key in ("a", "b", "a", "b")] == [True, True, False, False]


def test_a_forgotten_callback_is_remembered_no_longer() -> None:
    log = CallbackFailureLog(logging.getLogger("test.failures"), clock=FakeClock())
    _fail(log, "a")

    log.forget("a")
    log.forget("never-failed")

    assert _fail(log, "a"), "logged again at once: nothing was kept about it"


def test_forgetting_a_callback_logs_how_many_failures_were_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = CallbackFailureLog(logging.getLogger("test.failures"), clock=FakeClock())
    for _ in range(4):
        _fail(log, "a")
    _fail(log, "b")

    log.forget("a")
    log.forget("b")  # its one failure was logged: nothing to sum up

    assert [r.getMessage() for r in caplog.records[2:]] == [
        "event callback 'a' was unregistered (3 more failures not logged)"
    ]


def test_the_messages_name_the_callback_as_the_user_of_the_log_describes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = CallbackFailureLog(
        logging.getLogger("test.failures"),
        clock=FakeClock(),
        describe="lrc_callback of %s (%s)",
        carry_on="later updates are still passed on",
    )
    for _ in range(2):
        try:
            raise ValueError("bad update")
        except ValueError:
            log.report("key", "Move", "42_Move")
    log.forget("key")

    assert [r.getMessage() for r in caplog.records] == [
        "lrc_callback of Move (42_Move) raised; later updates are still passed on",
        "lrc_callback of Move (42_Move) was unregistered (1 more failures not logged)",
    ]
