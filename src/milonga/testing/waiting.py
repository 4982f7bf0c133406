"""Waiting for what no event or callback reports, such as a line in a server's log."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

WAIT_SECONDS = 20.0
WAIT_POLL_SECONDS = 0.02


def wait_until(
    condition: Callable[[], bool], what: str = "the condition", timeout: float = WAIT_SECONDS
) -> None:
    """Return once ``condition()`` holds; fail the test, naming ``what``, if it does not
    within ``timeout`` seconds.

    It polls every `WAIT_POLL_SECONDS`: for events, `TangoEvents.assert_event` waits
    without polling and returns the moment the event is there.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(WAIT_POLL_SECONDS)
