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
    return {signum: _raising_handler(signum) for signum in _not_ignored()}


def _raising_handler(signum: int) -> Callable[[int, FrameType | None], object]:
    """The `raising` handler of stop signal ``signum``."""
    return signal.default_int_handler if signum == signal.SIGINT else raise_terminated


def _not_ignored() -> list[int]:
    """The stop signals that this program was not started to ignore."""
    return [signum for signum in STOP_SIGNALS if signal.getsignal(signum) != signal.SIG_IGN]


class _HeldUntilStarted:
    """A stop-signal handler that notes the first stop signal it gets until `start` is
    called, and from then on raises as the `raising` handlers do.

    Switching one flag, rather than the handlers, leaves no moment at which a signal is
    neither held nor raised: Python runs the handler between two bytecodes, so it runs
    either before the flag is set, and `start` sees what it held, or after, and raises.
    """

    def __init__(self) -> None:
        self.held: int | None = None
        self._started = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._started:
            _raising_handler(signum)(signum, frame)
        elif self.held is None:
            self.held = signum

    def start(self) -> bool:
        """Raise on the next stop signal; return False if one has already come."""
        self._started = True
        return self.held is None


def run_command(prog: str, load: Callable[[], Callable[[], int]]) -> int:
    """Run a command-line tool that must import Tango before it can clean up after itself;
    return its exit status.

    Call it before importing anything heavy.  ``load()`` does the heavy imports (and may
    parse the arguments) and returns the tool.  A stop signal that arrives meanwhile is
    held back until ``load()`` returns, because an exception raised inside an import can
    be printed and swallowed there (numpy's, under PyTango's): then, before the tool
    starts anything, this says so in one line on standard error and returns 130 after
    Ctrl-C, 143 after SIGTERM or SIGHUP.  Otherwise the tool runs with stop signals
    raising as under the `raising` handlers, and its status is returned; a signal that
    comes once ``load()`` has returned is either held that way or raised as the tool
    starts, never lost.
    """
    handler = _HeldUntilStarted()
    with handling(dict.fromkeys(_not_ignored(), handler)):
        tool = load()
        if handler.start():
            return tool()
    interrupted = handler.held == signal.SIGINT
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
