"""DelayedActions: one thread runs the scheduler's delayed actions in due order."""

from __future__ import annotations

import logging
import threading

import pytest

from milonga.scheduler.timers import DelayedActions

WAIT_SECONDS = 60.0


def _threads_named(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


def test_actions_run_in_due_order_on_one_thread() -> None:
    later = DelayedActions("test-timer-order")
    ran: list[tuple[str, str]] = []
    done = threading.Event()

    def record(label: str) -> None:
        ran.append((label, threading.current_thread().name))
        if len(ran) == 3:
            done.set()

    later.call_later(0.3, lambda: record("second"))
    later.call_later(0.3, lambda: record("third"))  # same time: in the order given
    later.call_later(0.0, lambda: record("first"))

    assert done.wait(WAIT_SECONDS)
    assert ran == [(label, "test-timer-order") for label in ("first", "second", "third")]
    later.close()


def test_close_drops_what_is_not_due_and_stops_the_thread() -> None:
    later = DelayedActions("test-timer-close")
    assert not _threads_named("test-timer-close"), "no thread before the first action"
    ran = threading.Event()
    later.call_later(60.0, ran.set)
    assert later.pending() == 1

    later.close()
    later.call_later(0.0, ran.set)  # ignored once closed

    assert later.pending() == 0
    assert not _threads_named("test-timer-close")
    assert not ran.is_set()


def test_an_action_that_raises_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    later = DelayedActions("test-timer-raise")
    ran = threading.Event()

    def broken() -> None:
        raise RuntimeError("internal trouble")

    with caplog.at_level(logging.ERROR, logger="milonga.scheduler"):
        later.call_later(0.0, broken)
        later.call_later(0.0, ran.set)
        assert ran.wait(WAIT_SECONDS)
    later.close()

    assert "internal trouble" in caplog.text
