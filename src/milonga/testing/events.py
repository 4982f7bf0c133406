"""Recorded events, and how an assertion about them that failed is told.

Pure code, no Tango: `RecordedEvent` holds what a test needs of one `tango.EventData`,
decoded once when the event was recorded, and `render_events` and `Expectation` make the
text of a failed `TangoEvents` assertion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from milonga.testing.matching import describe_value, value_matches

ERROR_TEXT_LIMIT = 120
"""An error is cut to this many characters in the table of events."""


@dataclass(frozen=True)
class RecordedEvent:
    """One event of a recorded stream, as the recorder received it."""

    stream: str
    """``dev/ice/name/attr.change``: the device, attribute and event type."""
    received: float
    """When cppTango received it, in seconds since the epoch (as `time.time`)."""
    value: object
    """The attribute's value; None for an error event."""
    quality: str | None
    """``ATTR_VALID``, ``ATTR_ALARM``...; None for an error event."""
    reason: str | None
    """Why it was sent: ``SubSuccess`` (the value when subscribing), ``Update``,
    ``SubFail``...; None before PyTango 10.1, whose events carry no reason."""
    error: str | None
    """For an error event, its first error as ``reason: description``; else None."""
    labels: tuple[str, ...] = ()
    """The enum labels of a ``DevEnum`` attribute, which names its values; else empty."""
    data: Any = None
    """The `tango.EventData` itself."""

    def matches(self, expected: object) -> bool:
        """Whether this is a value event whose value is ``expected`` (see
        `milonga.testing.matching.value_matches`); an error event matches no value."""
        return self.error is None and value_matches(expected, self.value, self.labels)

    def describe(self) -> str:
        """The value, or ``error: ...`` for an error event."""
        if self.error is not None:
            return f"error: {_cut(self.error)}"
        return describe_value(self.value, self.labels)


@dataclass(frozen=True)
class Expectation:
    """What an assertion looked for, told in words."""

    stream: str
    value: str | None = None
    """`describe_value` of the expected value; None for any value."""
    predicate: str | None = None
    """The predicate's name; None for none."""

    def __str__(self) -> str:
        """``event of dev/attr.change with value 6 and matching is_moving``."""
        conditions = []
        if self.value is not None:
            conditions.append(f"value {self.value}")
        if self.predicate is not None:
            conditions.append(f"matching {self.predicate}")
        what = f"event of {self.stream}"
        return f"{what} with {' and '.join(conditions)}" if conditions else what


def render_events(
    events: Sequence[RecordedEvent], started: float, *, marked: RecordedEvent | None = None
) -> list[str]:
    """The table of ``events``: time since ``started`` (seconds since the epoch), reason,
    quality and value or error of each, oldest first; ``marked`` is flagged with ``>``."""
    if not events:
        return ["  (no event was recorded)"]
    rows = [("", "t (s)", "reason", "quality", "value")]
    rows += [
        (
            ">" if event is marked else "",
            f"{event.received - started:.3f}",
            event.reason or "-",
            event.quality or "-",
            event.describe(),
        )
        for event in events
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return [
        "  "
        + " ".join(
            cell.rjust(width) if column == 1 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row[:4], widths, strict=True))
        )
        + "  "
        + row[4]
        for row in rows
    ]


def _cut(text: str) -> str:
    """``text`` on one line, at most `ERROR_TEXT_LIMIT` characters."""
    line = " ".join(text.split())
    if len(line) <= ERROR_TEXT_LIMIT:
        return line
    return line[: ERROR_TEXT_LIMIT - 3] + "..."
