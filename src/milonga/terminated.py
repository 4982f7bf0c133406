"""SIGTERM handled the way Ctrl-C is, for milonga's command-line tools."""

from __future__ import annotations

from types import FrameType

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT)."""
EXIT_TERMINATED = 143
"""Exit status after SIGTERM (128 + SIGTERM)."""


class Terminated(BaseException):
    """SIGTERM arrived: leave the way Ctrl-C does (a BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` swallows it)."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that raises `Terminated`."""
    raise Terminated
