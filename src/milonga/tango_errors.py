"""Tango error stacks as text, the same way in every part of milonga."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tango


def describe_failure(failure: tango.DevFailed) -> str:
    """A Tango error stack as text: one ``REASON: description`` line per error, root first."""
    return describe_errors(failure.args) or str(failure)


def describe_errors(errors: Iterable[Any]) -> str:
    """``tango.DevError``s (an error event's ``errors``, a failure's ``args``) as
    `describe_failure` tells them; empty for none."""
    return "\n".join(f"{error.reason}: {' '.join(str(error.desc).split())}" for error in errors)


def root_cause(failure: tango.DevFailed) -> str:
    """The root error of a Tango error stack, as one ``REASON: description`` line."""
    return describe_failure(failure).splitlines()[0]
