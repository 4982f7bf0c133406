"""Tango error stacks as text, the same way in every part of milonga."""

from __future__ import annotations

import tango


def describe_failure(failure: tango.DevFailed) -> str:
    """A Tango error stack as text: one ``REASON: description`` line per error, root first."""
    lines = []
    for error in failure.args:
        description = " ".join(str(error.desc).split())
        lines.append(f"{error.reason}: {description}")
    return "\n".join(lines) or str(failure)


def root_cause(failure: tango.DevFailed) -> str:
    """The root error of a Tango error stack, as one ``REASON: description`` line."""
    return describe_failure(failure).splitlines()[0]
