"""Where the monitor sends each poll: the screen, a JSON Lines file, the worst severity
seen, and anything else with a ``write(update)`` method (`Output`).

The live poll loop (`milonga.monitor.loop.PollLoop`) and ``--replay`` hand each
`PollUpdate` to them through `send`, so that a recording replayed reaches the same outputs
the same way as the polls it records did.  Pure code, no Tango.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

from milonga import standard_streams
from milonga.monitor.analysis import PollUpdate
from milonga.monitor.findings import Severity
from milonga.monitor.jsonl import JsonLinesWriter
from milonga.terminated import Handler, Terminated, handling


class Output(Protocol):
    """Where the loop sends each poll."""

    def write(self, update: PollUpdate) -> None:
        """Take ``update``.  Raise `OutputError` when this output can take no more: the
        other outputs still get the poll, then the loop ends with that error."""


class OutputError(Exception):
    """An output cannot be written; the message says which and what to do."""


def send(
    update: PollUpdate,
    outputs: Sequence[Output],
    screen: Screen | None,
    screen_signals: dict[int, Handler] | None = None,
) -> OutputError | None:
    """Hand ``update`` to each of ``outputs`` in order, then to ``screen``; return the
    first output's failure, if any, once all have it (a failing output does not keep the
    others from the poll).  ``screen_signals``, if given, are the signal handlers to act
    with while the screen is written, as a reader may keep it blocked (`PollLoop`)."""
    failure: OutputError | None = None
    for output in outputs:
        try:
            output.write(update)
        except OutputError as error:
            failure = failure or error
    if screen is not None:
        with handling(screen_signals) if screen_signals else contextlib.nullcontext():
            screen.write(update)
    return failure


class Screen:
    """Shows each poll on ``out`` (a terminal, a pipe or a file) as ``text`` renders it."""

    def __init__(self, out: TextIO, text: Callable[[PollUpdate], str]) -> None:
        self.out = out
        self._text = text
        self.closed = False
        """Whether the rest of the output goes nowhere: the screen failed, or took nothing
        more when a stop signal came."""

    def write(self, update: PollUpdate) -> None:
        self.show(self._text(update))

    def show(self, text: str) -> None:
        """Write ``text``.  A signal meanwhile sends the rest of the screen output nowhere
        if the screen takes nothing more (a full pipe): a later write would block too.
        Arriving just after the text went out, it leaves the screen as it is."""
        try:
            self.out.write(text)
            self.out.flush()
        except (KeyboardInterrupt, Terminated):
            if _stuck(self.out):
                self._close()
            raise
        except BrokenPipeError:
            self._close()
            raise
        except OSError as error:
            self._close()
            raise OutputError(
                f"cannot write to standard output ({error.strerror}); send it somewhere "
                "that takes it, such as a file or a pipe"
            ) from None

    def _close(self) -> None:
        """Send the rest of the screen output, buffered text included, nowhere."""
        self.closed = True
        standard_streams.discard(self.out)


class JsonLinesOutput:
    """Writes each poll and its findings to ``writer``, the file called ``name``, until
    that fails: it then says so once (`OutputError`) and takes nothing more."""

    def __init__(self, writer: JsonLinesWriter, name: str) -> None:
        self._writer: JsonLinesWriter | None = writer
        self.name = name

    def write(self, update: PollUpdate) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write(update.poll, update.findings)
        except OSError as error:
            self._writer = None
            raise OutputError(
                f"cannot write to {self.name} ({error.strerror}); snapshots are no longer "
                "written to it. Make sure it can be written (free space, a working disk) "
                "or give another file with -o"
            ) from None


class WorstSeverity:
    """Remembers the worst severity of the findings active at any poll so far."""

    def __init__(self) -> None:
        self.worst: Severity | None = None
        """None until a poll has an active finding."""

    def write(self, update: PollUpdate) -> None:
        worst = update.findings.worst
        if worst is not None and (self.worst is None or worst > self.worst):
            self.worst = worst


def _stuck(stream: TextIO) -> bool:
    """Whether a write to ``stream`` would block now, as to a pipe nobody reads (`| less`
    waiting at a page); a stream without a file descriptor never blocks."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):
        return False
    _, writable, _ = select.select([], [descriptor], [], 0)
    return not writable
