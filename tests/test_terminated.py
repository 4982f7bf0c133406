"""The stop-signal handling that milonga's tools and the sandbox share."""

from __future__ import annotations

import os
import signal

from milonga.terminated import STOP_SIGNALS, handling


def test_stop_signals_can_be_ignored_until_a_block_ends() -> None:
    usual = signal.getsignal(signal.SIGINT)

    with handling(dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)):
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt here

    assert signal.getsignal(signal.SIGINT) is usual
