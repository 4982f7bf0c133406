"""The monitor inside the demo: `tango-event-monitor --monitor`, run on a thread.

`LiveMonitor` polls the servers of some devices every period, prints each snapshot with the
monitor's own renderer, keeps every poll, with its report and findings, for the diagnosis,
and may record each poll as `tango-event-monitor -o FILE` does.  `Console` lets the
snapshots and the demo's own lines share one output without interleaving.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TextIO

from milonga.demo.errors import DemoError
from milonga.monitor import (
    CallError,
    Collector,
    MonitorSetupError,
    render_poll,
    resolve_servers,
)
from milonga.monitor.analysis import PollUpdate
from milonga.monitor.cli import PROG
from milonga.monitor.jsonl import JsonLinesWriter
from milonga.monitor.loop import PollLoop
from milonga.monitor.outputs import OutputError


class Console:
    """One output that several threads write whole blocks of text to, one at a time."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def say(self, *lines: str) -> None:
        """Write ``lines``, each followed by a newline, as one block."""
        self.write("".join(f"{line}\n" for line in lines))

    def write(self, text: str) -> None:
        with self._lock:
            self._out.write(text)
            self._out.flush()


class LiveMonitor:
    """Polls the servers of ``devices`` with performance sampling on, as a context manager.

    Entering turns sampling on and takes a first poll, then polls every ``period`` seconds
    on a thread, with the monitor's own loop (`PollLoop`).  Each poll is printed to
    ``console`` (if given) exactly as `tango-event-monitor` prints it, findings included,
    with its notes and warnings, and its `PollUpdate` (the poll, what changed and the
    findings, as the loop made them) is added to `updates` and, with ``record``, written
    to it as `tango-event-monitor -o FILE` writes it.  A poll that cannot be written ends
    the loop, with a `DemoError` that says why.  Leaving normally takes one
    last poll, so that the samples since the previous one are shown too (unless a poll was
    taken less than half a period ago); leaving on an exception takes none.  Either way
    sampling is turned off again.
    """

    def __init__(
        self,
        devices: Sequence[str],
        period: float,
        console: Console | None,
        record: JsonLinesWriter | None = None,
    ) -> None:
        self.devices = tuple(devices)
        self.period = period
        self.updates: list[PollUpdate] = []
        self._console = console
        self._record = record
        self._loop: PollLoop | None = None
        self._changed = threading.Condition()
        self._running = False
        self._error: BaseException | None = None
        self._last_poll = 0.0
        self._thread = threading.Thread(target=self._run, name="milonga-demo-monitor", daemon=True)

    def __enter__(self) -> LiveMonitor:
        try:
            collector = Collector(resolve_servers(self.devices))
        except MonitorSetupError as error:
            raise DemoError(f"cannot monitor the demo's devices: {error}") from None
        self._loop = PollLoop(
            collector, [self], period=self.period, sampling=True, say=self._say, prog=PROG
        )
        self._running = True
        self._thread.start()
        try:
            with self._changed:
                self._changed.wait_for(lambda: self.updates or not self._running)
                if self._error is not None:
                    raise self._error
        except BaseException:
            self._finish(last_poll=False)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        recent = time.monotonic() - self._last_poll < self.period / 2
        self._finish(last_poll=exc is None and not recent)
        if exc is None and self._error is not None:
            raise self._error

    def wait_for(self, condition: Callable[[PollUpdate], bool], timeout: float) -> bool:
        """Wait for a new poll whose update ``condition`` holds for; False after
        ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = len(self.updates)
            while True:
                if self._error is not None:
                    raise self._error
                if any(condition(update) for update in self.updates[seen:]):
                    return True
                seen = len(self.updates)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def write(self, update: PollUpdate) -> None:
        """The loop's output: print the poll, keep its update and record it."""
        if self._console is not None:
            self._console.write(render_poll(update.report, update.findings))
        with self._changed:
            self.updates.append(update)
            self._last_poll = time.monotonic()
            self._changed.notify_all()
        if self._record is not None:
            try:
                self._record.write(update.poll, update.findings)
            except OSError as error:
                self._record_failed(error)

    def _record_failed(self, error: OSError) -> None:
        """Record nothing more, keep the `DemoError` that leaving raises, and end the loop
        (raise `OutputError`)."""
        assert self._record is not None
        path, self._record = os.fspath(self._record.path), None
        message = (
            f"cannot record the demo's polls in {path} ({error.strerror}); make sure it can "
            "be written (free space, a working disk), or give another directory to --record"
        )
        with self._changed:
            self._error = self._error or DemoError(message)
        raise OutputError(message)

    def _run(self) -> None:
        """The thread: the loop, until `_finish` stops it; its error is kept for the main
        thread, which `wait_for` and leaving raise."""
        assert self._loop is not None
        try:
            self._loop.run(on_sampling_failed=_refused)
        except OutputError:
            pass  # `_record_failed` kept the error
        except BaseException as error:
            with self._changed:
                self._error = error
        finally:
            with self._changed:
                self._running = False
                self._changed.notify_all()

    def _finish(self, *, last_poll: bool) -> None:
        """Stop the loop, which turns sampling off, and wait for it to end."""
        assert self._loop is not None
        self._loop.stop(last_poll=last_poll)
        try:
            self._thread.join()
        finally:
            self._loop.collector.close()

    def _say(self, kind: str, text: str) -> None:
        """The loop's notes and warnings, as the monitor prints them, when live.  Its
        errors, which only a failed recording causes, are left out: leaving raises them."""
        if self._console is not None and kind != "error":
            self._console.say(f"{PROG}: {kind}: {text}")


def _refused(failures: Mapping[str, CallError]) -> None:
    """Raise `DemoError` for the first server that did not turn sampling on."""
    admin, why = next(iter(failures.items()))
    raise DemoError(
        f"{admin} refused to turn performance sampling on: {why.reason.splitlines()[0]}; "
        "its server should be running PyTango 10.3 or newer, as the demo's are"
    )
