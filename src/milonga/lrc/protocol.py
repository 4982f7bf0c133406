"""The long-running-command protocol as the field speaks it: codes, names and parsing.

Pure functions only; nothing here talks to Tango.  A command's reply is
``[[ResultCode], [command_id]]``.  Protocol v2 reports on one attribute, `LRC_EVENT`, whose
value is ``[command_id, json]``; protocol v1 reports on three attributes, each a flat list of
command-id/value pairs.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any


class ResultCode(enum.IntEnum):
    """What a long running command's reply says about its submission."""

    OK = 0
    STARTED = 1
    QUEUED = 2
    FAILED = 3
    UNKNOWN = 4
    REJECTED = 5
    NOT_ALLOWED = 6
    ABORTED = 7


class TaskStatus(enum.IntEnum):
    """Where a long running command is in its life."""

    STAGING = 0
    QUEUED = 1
    IN_PROGRESS = 2
    ABORTED = 3
    NOT_FOUND = 4
    COMPLETED = 5
    REJECTED = 6
    FAILED = 7


TERMINAL_STATUSES = frozenset(
    {TaskStatus.ABORTED, TaskStatus.NOT_FOUND, TaskStatus.COMPLETED, TaskStatus.REJECTED,
     TaskStatus.FAILED}
)  # fmt: skip
ACCEPTED_CODES = frozenset({ResultCode.QUEUED, ResultCode.STARTED})

VERSIONS_ATTRIBUTE = "lrcProtocolVersions"
LRC_EVENT = "_lrcEvent"
V1_STATUS = "longRunningCommandStatus"
V1_PROGRESS = "longRunningCommandProgress"
V1_RESULT = "longRunningCommandResult"
V1_ATTRIBUTES = (V1_STATUS, V1_PROGRESS, V1_RESULT)
CLIENT_VERSIONS = (1, 2)
"""The oldest and newest protocol versions milonga's client speaks."""


class ProtocolVersionError(RuntimeError):
    """The device speaks no protocol version that milonga's client speaks."""


class MalformedUpdateError(ValueError):
    """A device reported something about a command that does not follow the protocol."""


def attributes_of(version: int) -> tuple[str, ...]:
    """The attributes whose change events carry the updates of protocol ``version``."""
    return (LRC_EVENT,) if version >= 2 else V1_ATTRIBUTES


def negotiate(advertised: Sequence[int] | None, device: str = "the device") -> int:
    """The newest version both sides speak; ``advertised`` is None for a v1-only device."""
    if advertised is None:
        return 1
    if len(advertised) != 2:
        raise ProtocolVersionError(
            f"{device} advertises {VERSIONS_ATTRIBUTE} = {list(advertised)}; expected two "
            "numbers (oldest, newest): fix the device's attribute"
        )
    oldest, newest = (
        max(CLIENT_VERSIONS[0], int(advertised[0])),
        min(CLIENT_VERSIONS[1], int(advertised[1])),
    )
    if oldest > newest:
        raise ProtocolVersionError(
            f"{device} speaks long-running-command protocol versions {advertised[0]} to "
            f"{advertised[1]}, milonga speaks {CLIENT_VERSIONS[0]} to {CLIENT_VERSIONS[1]}; "
            "upgrade whichever side is older"
        )
    return newest


def parse_reply(reply: Any, command: str) -> tuple[ResultCode, str]:
    """The result code and the command id (or the reason, if rejected) of a reply."""
    try:
        [[code], [text]] = reply
        return ResultCode(int(code)), str(text)
    except (TypeError, ValueError) as error:
        raise MalformedUpdateError(
            f"{command} replied {reply!r}, where a long running command replies "
            f"[[result_code], [command_id]]: check that {command} is a long running command"
        ) from error


def parse_status(raw: Any) -> TaskStatus:
    """A `TaskStatus` from its number or its name (any case): v2 devices send the number,
    v1 devices the name, and either may appear in both."""
    try:
        if isinstance(raw, str) and not raw.strip().isdigit():
            return TaskStatus[raw.strip().upper()]
        return TaskStatus(int(raw))
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedUpdateError(
            f"status {raw!r} is not a TaskStatus; expected one of "
            f"{', '.join(s.name for s in TaskStatus)} or its number"
        ) from error


def decode_v2(value: Sequence[str] | None, command_id: str) -> dict[str, Any] | None:
    """The keyword arguments that an `LRC_EVENT` value holds for ``command_id``, or None
    if it is about another command."""
    if value is None or len(value) < 2 or value[0] != command_id:
        return None
    try:
        update = json.loads(value[1])
    except ValueError as error:
        raise MalformedUpdateError(
            f"{LRC_EVENT} for {command_id} holds {value[1]!r}, which is not JSON"
        ) from error
    if not isinstance(update, dict):
        raise MalformedUpdateError(
            f"{LRC_EVENT} for {command_id} holds {value[1]!r}; expected a JSON object"
        )
    if "status" in update:
        update["status"] = parse_status(update["status"])
    return update


def decode_v1(
    attribute: str, value: Sequence[str] | None, command_id: str
) -> dict[str, Any] | None:
    """The keyword argument that a v1 attribute's value holds for ``command_id``, or None
    if the value says nothing about it.  A result that is not JSON is passed on as text."""
    raw = _pair_value(value, command_id)
    if raw is None:
        return None
    name = attribute.lower()
    if name == V1_STATUS.lower():
        return {"status": parse_status(raw)}
    if name == V1_PROGRESS.lower():
        try:
            return {"progress": int(raw)}
        except ValueError as error:
            raise MalformedUpdateError(
                f"{V1_PROGRESS} for {command_id} is {raw!r}; expected an integer"
            ) from error
    if name == V1_RESULT.lower():
        try:
            return {"result": json.loads(raw)}
        except ValueError:
            return {"result": raw}  # some field devices put a bare message there
    return None


def _pair_value(value: Sequence[str] | None, command_id: str) -> str | None:
    """The value paired with ``command_id`` in a flat id/value list; the last one wins."""
    if value is None:
        return None
    found = None
    for index in range(0, len(value) - 1, 2):
        if value[index] == command_id:
            found = value[index + 1]
    return found
