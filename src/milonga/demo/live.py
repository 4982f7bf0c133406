"""The monitor inside the demo: `tango-event-monitor --monitor`, run on a thread.

`LiveMonitor` polls the servers of some devices every period, prints each snapshot with the
monitor's own renderer, and keeps every poll for the diagnosis.  `Console` lets the
snapshots and the demo's own lines share one output without interleaving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TextIO

from milonga.demo.errors import DemoError
from milonga.monitor import (
    Collector,
    MonitorSetupError,
    Poll,
    PollHistory,
    render_poll,
    resolve_servers,
)
from milonga.monitor.poll import Cadence


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

    Entering turns sampling on and starts polling at once, then every ``period`` seconds.
    Each poll is printed to ``console`` (if given) exactly as `tango-event-monitor` prints
    it, and added to `polls`.  Leaving normally takes one last poll, so that the samples
    since the previous one are shown too (unless a poll was taken less than half a period
    ago), and turns sampling off again; leaving on an exception only stops polling.
    """

    def __init__(self, devices: Sequence[str], period: float, console: Console | None) -> None:
        self.devices = tuple(devices)
        self.period = period
        self.polls: list[Poll] = []
        self._console = console
        self._history = PollHistory()
        self._collector: Collector | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._started = self._last_poll = 0.0
        self._thread = threading.Thread(target=self._run, name="milonga-demo-monitor", daemon=True)

    def __enter__(self) -> LiveMonitor:
        try:
            self._collector = Collector(resolve_servers(self.devices))
        except MonitorSetupError as error:
            raise DemoError(f"cannot monitor the demo's devices: {error}") from None
        failures = self._collector.set_perf_monitoring(True)
        if failures:
            self._collector.close()
            admin, why = next(iter(failures.items()))
            raise DemoError(
                f"{admin} refused to turn performance sampling on: {why.reason.splitlines()[0]}; "
                "its server should be running PyTango 10.3 or newer, as the demo's are"
            )
        self._started = time.monotonic()
        self._take_poll()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        assert self._collector is not None
        try:
            if exc is None:
                if time.monotonic() - self._last_poll >= self.period / 2:
                    self._take_poll()
                self._collector.set_perf_monitoring(False)
        finally:
            self._collector.close()
        if exc is None and self._error is not None:
            raise self._error

    def wait_for(self, condition: Callable[[Poll], bool], timeout: float) -> bool:
        """Wait for a new poll for which ``condition`` holds; False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = len(self.polls)
            while True:
                if self._error is not None:
                    raise self._error
                if any(condition(poll) for poll in self.polls[seen:]):
                    return True
                seen = len(self.polls)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def _run(self) -> None:
        try:
            # The monitor's cadence: after an overrun, the next point of the same grid.
            cadence = Cadence(self.period, self._started)
            while not self._stop.wait(cadence.next(time.monotonic()).wait):
                self._take_poll()
        except BaseException as error:  # shown to the main thread by wait_for or on exit
            with self._changed:
                self._error = error
                self._changed.notify_all()

    def _take_poll(self) -> None:
        assert self._collector is not None
        poll = self._collector.poll()
        report = self._history.add(poll)
        if self._console is not None:
            self._console.write(render_poll(report))
        with self._changed:
            self.polls.append(poll)
            self._last_poll = time.monotonic()
            self._changed.notify_all()
