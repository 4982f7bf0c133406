"""A protocol-v2 device built on `LrcDevice`, with commands that succeed, fail and wait,
and a `ticks` attribute that gives tests an unrelated event stream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from tango.server import attribute, command

from milonga.lrc import LrcDevice, ProgressReporter, long_running_command

WAIT_CAP_SECONDS = 30.0
ESCAPES: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "CancelledError": asyncio.CancelledError,
}
"""The exceptions `LrcTester.Escape` raises: none of them is an `Exception`."""


class LrcTester(LrcDevice):
    """Long running commands for tests; at most two commands wait at a time."""

    MAX_QUEUED_COMMANDS = 2

    def init_device(self) -> None:
        super().init_device()
        self._ticks = 0
        self._muted = False
        self.set_change_event("ticks", True, False)

    @long_running_command(dtype_in=str)
    def Echo(self, text: str) -> str:
        """Return ``text`` at once: the no-op command."""
        return text

    @long_running_command(dtype_in=int)
    def Steps(self, steps: int, progress: ProgressReporter) -> dict[str, Any]:
        """Report progress ``steps`` times, then return how many steps it took."""
        for step in range(1, steps + 1):
            progress(100 * step // steps)
        return {"steps": steps}

    @long_running_command
    def Fail(self) -> None:
        """Raise, as a command whose hardware refuses would."""
        raise ValueError("the hardware refused: limit switch engaged")

    @long_running_command(dtype_in=str)
    def Escape(self, kind: str) -> None:
        """Raise the exception named ``kind`` (a key of `ESCAPES`), as code that calls
        sys.exit or runs a coroutine that is cancelled would."""
        raise ESCAPES[kind](f"{kind} raised by the command")

    @long_running_command
    def Block(self, abort_event: threading.Event) -> str:
        """Run until aborted (at most 30 s)."""
        abort_event.wait(WAIT_CAP_SECONDS)
        return "stopped"

    @command(dtype_in=bool)
    def MuteUpdates(self, muted: bool) -> None:
        """Stop or resume pushing `_lrcEvent`, as if its events were lost on the way."""
        self._muted = muted

    def _publish_lrc_update(self, command_id: str, changes: Mapping[str, Any]) -> None:
        if not self._muted:
            super()._publish_lrc_update(command_id, changes)

    @attribute(dtype=int)
    def ticks(self) -> int:
        return self._ticks

    @command
    def Tick(self) -> None:
        self._ticks += 1
        self.push_change_event("ticks", self._ticks)
