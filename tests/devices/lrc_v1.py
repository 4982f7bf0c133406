"""A device that speaks only protocol v1: no `lrcProtocolVersions`, and its updates as flat
command-id/value lists on three attributes, as older field devices publish them."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from tango.server import Device, attribute, command

from milonga.lrc import CommandExecutor, ProgressReporter, TaskStatus
from milonga.lrc.device import join_serving_pushes
from milonga.lrc.executor import Work
from milonga.scheduler import allow_internal_threads

KEPT = 16
HOLD_CAP_SECONDS = 30.0


class LrcV1Tester(Device):
    """`Steps(n)` reports progress n times and returns its step count, and `Hold` runs
    until `Release`, over protocol v1."""

    def init_device(self) -> None:
        super().init_device()
        self._statuses: dict[str, str] = {}
        self._progresses: dict[str, str] = {}
        self._result = ["", ""]
        self._muted = False
        self._released = threading.Event()
        self._lock = threading.Lock()
        for name in ("longRunningCommandStatus", "longRunningCommandProgress",
                     "longRunningCommandResult"):  # fmt: skip
            self.set_change_event(name, True, False)
        self._executor = CommandExecutor(self._publish, name="lrc-v1")

    def delete_device(self) -> None:
        with allow_internal_threads(self):
            self._executor.shutdown(join=join_serving_pushes)
        super().delete_device()

    @command(dtype_in=int, dtype_out="DevVarLongStringArray")
    def Steps(self, steps: int) -> list[list[Any]]:
        def work(progress: ProgressReporter, abort_event: threading.Event) -> dict[str, int]:
            for step in range(1, steps + 1):
                progress(100 * step // steps)
            return {"steps": steps}

        return self._submit("Steps", work)

    @command(dtype_out="DevVarLongStringArray")
    def Hold(self) -> list[list[Any]]:
        """Report progress 1, then run until `Release` (at most 30 s); the result is
        "released"."""

        def work(progress: ProgressReporter, abort_event: threading.Event) -> str:
            progress(1)
            self._released.wait(HOLD_CAP_SECONDS)
            self._released.clear()
            return "released"

        return self._submit("Hold", work)

    @command
    def Release(self) -> None:
        """End the running `Hold`, or the next one at once."""
        self._released.set()

    def _submit(self, name: str, work: Work) -> list[list[Any]]:
        code, command_id = self._executor.submit(name, work)
        return [[int(code)], [command_id]]

    @command(dtype_in=bool)
    def MuteUpdates(self, muted: bool) -> None:
        """Stop or resume pushing the three attributes, as if their events were lost."""
        self._muted = muted

    def _publish(self, command_id: str, changes: Mapping[str, Any]) -> None:
        # The result goes out before the terminal status, as field devices do.
        if "result" in changes:
            self._result = [command_id, json.dumps(changes["result"])]
            self._push("longRunningCommandResult", self._result)
        if "progress" in changes:
            with self._lock:
                self._progresses[command_id] = str(changes["progress"])
                progresses = _pairs(self._progresses)
            self._push("longRunningCommandProgress", progresses)
        if "status" in changes:
            with self._lock:
                self._statuses[command_id] = TaskStatus(changes["status"]).name
                statuses = _pairs(self._statuses)
            self._push("longRunningCommandStatus", statuses)

    def _push(self, name: str, value: list[str]) -> None:
        if not self._muted:
            self.push_change_event(name, value)

    @attribute(dtype=(str,), max_dim_x=2 * KEPT)
    def longRunningCommandStatus(self) -> list[str]:
        with self._lock:
            return _pairs(self._statuses)

    @attribute(dtype=(str,), max_dim_x=2 * KEPT)
    def longRunningCommandProgress(self) -> list[str]:
        with self._lock:
            return _pairs(self._progresses)

    @attribute(dtype=(str,), max_dim_x=2)
    def longRunningCommandResult(self) -> list[str]:
        return self._result


def _pairs(values: dict[str, str]) -> list[str]:
    """The last `KEPT` entries as a flat id/value list."""
    while len(values) > KEPT:
        del values[next(iter(values))]
    return [item for pair in values.items() for item in pair]


class LrcV1Unpublished(LrcV1Tester):
    """`LrcV1Tester` whose three attributes push no change events: no client can subscribe
    to them, as when a device forgets to publish its LRC attributes."""

    def init_device(self) -> None:
        super().init_device()
        for name in ("longRunningCommandStatus", "longRunningCommandProgress",
                     "longRunningCommandResult"):  # fmt: skip
            self.set_change_event(name, False, False)
