"""Stop signals handled the way Ctrl-C is, for milonga's command-line tools."""

from __future__ import annotations

import contextlib
import signal
import sys
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
        for signum in _not_ignored()
    }


def _not_ignored() -> list[int]:
    """The stop signals that this program was not started to ignore."""
    return [signum for signum in STOP_SIGNALS if signal.getsignal(signum) != signal.SIG_IGN]


class _HeldSignal:
    """A handler that only notes the first stop signal it gets."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum


def run_command(prog: str, load: Callable[[], Callable[[], int]]) -> int:
    """Run a command-line tool that must import Tango before it can clean up after itself;
    return its exit status.

    Call it before importing anything heavy.  ``load()`` does the heavy imports (and may
    parse the arguments) and returns the tool.  A stop signal that arrives meanwhile is
    held back until ``load()`` returns, because an exception raised inside an import can
    be printed and swallowed there (numpy's, under PyTango's): then, before the tool
    starts anything, this says so in one line on standard error and returns 130 after
    Ctrl-C, 143 after SIGTERM or SIGHUP.  Otherwise the tool runs with the `raising`
    handlers, and its status is returned.
    """
    held = _HeldSignal()
    with handling(dict.fromkeys(_not_ignored(), held)):
        tool = load()
        if held.signum is None:
            with handling(raising()):
                return tool()
    interrupted = held.signum == signal.SIGINT
    if sys.stderr is not None:
        what = "interrupted" if interrupted else "terminated"
        print(f"{prog}: {what} while starting; it started nothing", file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED


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
