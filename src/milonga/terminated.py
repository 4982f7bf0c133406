"""Stop signals handled the way Ctrl-C is, for milonga's command-line tools."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT)."""
EXIT_TERMINATED = 143
"""Exit status after SIGTERM or SIGHUP (128 + SIGTERM)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, SIGTERM and SIGHUP (the terminal closed): each stops a tool cleanly."""

Handler = Callable[[int, FrameType | None], Any] | int | None
"""What `signal.signal` takes and returns."""


class Terminated(BaseException):
    """SIGTERM arrived: leave the way Ctrl-C does (a BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` swallows it)."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that raises `Terminated`."""
    raise Terminated


def raising() -> dict[int, Handler]:
    """Handlers that make Ctrl-C raise KeyboardInterrupt, SIGTERM and SIGHUP `Terminated`,
    so that they all clean up; a signal the program was started to ignore (nohup) stays
    ignored."""
    return {
        signum: signal.default_int_handler if signum == signal.SIGINT else raise_terminated
        for signum in STOP_SIGNALS
        if signal.getsignal(signum) != signal.SIG_IGN
    }


@contextlib.contextmanager
def handling(handlers: dict[int, Handler]) -> Iterator[dict[int, Handler]]:
    """Handle signals with ``handlers`` inside the block; yield the handlers they replace.
    Only the main thread can set handlers: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield previous
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
