"""Learning that a command ended when none of its updates arrived.

A new Tango subscription can lose the events a device pushes in its first milliseconds,
with no error event (docs/scheduler.md, "What a new subscription can miss").  A command
that ends that quickly would never report its end.  So an invocation that subscribed for
itself asks the device once, `CATCH_UP_SECONDS` after the reply, if it has heard nothing:
protocol v2 devices list finished commands in ``lrcFinished``, v1 devices keep their
statuses in ``longRunningCommandStatus``.

Every invocation also asks once its events flow again after error events, as after a
server restart: the updates pushed meanwhile are lost, and a restarted server no longer
knows the command at all.
"""

from __future__ import annotations

import atexit
import json
from collections.abc import Callable, Sequence
from typing import Any

import tango

from milonga.lrc.protocol import (
    TERMINAL_STATUSES,
    V1_RESULT,
    V1_STATUS,
    MalformedUpdateError,
    TaskStatus,
    decode_v1,
    parse_status,
)
from milonga.scheduler.timers import DelayedActions

CATCH_UP_SECONDS = 1.0
"""How long after the reply an invocation that has heard nothing asks the device."""
V2_FINISHED = "lrcFinished"
V2_WAITING = ("lrcQueue", "lrcExecuting")

_ACTIONS = DelayedActions("milonga-lrc-catch-up")  # its thread starts with the first check
atexit.register(_ACTIONS.close)


def call_later(delay: float, action: Callable[[], None]) -> None:
    """Run ``action()`` in ``delay`` seconds on the one thread all invocations share."""
    _ACTIONS.call_later(delay, action)


def finished_v2(entries: Sequence[str] | None, command_id: str) -> dict[str, Any] | None:
    """The terminal update that an ``lrcFinished`` value holds for ``command_id``, or None.

    Each entry is a JSON object with the command's ``uid``, ``status`` (name or number)
    and, usually, ``result``; entries that are not are skipped.
    """
    for entry in entries or ():
        try:
            record = json.loads(entry)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("uid") != command_id:
            continue
        try:
            status = parse_status(record.get("status"))
        except MalformedUpdateError:
            return None
        if status not in TERMINAL_STATUSES:
            return None
        update: dict[str, Any] = {"status": status}
        if "result" in record:
            update["result"] = record["result"]
        return update
    return None


def finished_v1(
    statuses: Sequence[str] | None, result: Sequence[str] | None, command_id: str
) -> dict[str, Any] | None:
    """The terminal update that v1 status and result values hold for ``command_id``, or
    None if its status is missing or not terminal."""
    try:
        update = decode_v1(V1_STATUS, statuses, command_id)
    except MalformedUpdateError:
        return None
    if update is None or update["status"] not in TERMINAL_STATUSES:
        return None
    return {**update, **(decode_v1(V1_RESULT, result, command_id) or {})}


def ask_device(proxy: tango.DeviceProxy, version: int, command_id: str) -> dict[str, Any] | None:
    """What the device's own records say about how ``command_id`` ended, or None if it has
    not ended.  Raises `tango.DevFailed` if they cannot be read."""
    if version >= 2:
        finished: Any = proxy.read_attribute(V2_FINISHED)
        return finished_v2(finished.value, command_id)
    readings: list[Any] = proxy.read_attributes([V1_STATUS, V1_RESULT])
    return finished_v1(readings[0].value, readings[1].value, command_id)


def ask_device_after_outage(
    proxy: tango.DeviceProxy, version: int, command_id: str
) -> dict[str, Any] | None:
    """Like `ask_device`, for a device whose events stopped for a while, as when its server
    restarted: also a NOT_FOUND update if its records do not mention ``command_id`` at all,
    since a restarted server has forgotten the commands it was running."""
    if version >= 2:
        lists: list[Any] = proxy.read_attributes([*V2_WAITING, V2_FINISHED])
        ended = finished_v2(lists[-1].value, command_id)
        records = [entry for reading in lists for entry in reading.value or ()]
        known = any(_mentions(entry, command_id) for entry in records)
    else:
        v1: list[Any] = proxy.read_attributes([V1_STATUS, V1_RESULT])
        ended = finished_v1(v1[0].value, v1[1].value, command_id)
        known = command_id in (v1[0].value or ())
    if ended is not None or known:
        return ended
    return {"status": TaskStatus.NOT_FOUND}


def _mentions(entry: str, command_id: str) -> bool:
    try:
        record = json.loads(entry)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("uid") == command_id
