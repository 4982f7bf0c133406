"""Checks of what callers hand the scheduler, made at the call.

A mistake then raises at once, naming the argument, what it was and what is expected,
rather than failing later on a thread of the scheduler where nobody sees it.
"""

from __future__ import annotations

import numbers


def describe(value: object) -> str:
    """``value`` and its type, for an error message."""
    return "None" if value is None else f"{value!r} ({type(value).__name__})"


def positive_count(
    argument: str, value: object, advice: str, too_small: type[ValueError] = ValueError
) -> int:
    """``value`` as an int if it is a whole number of at least 1.

    Raises TypeError for anything but an integer (a bool included), and ``too_small`` for
    an integer below 1; both name ``argument`` and end with ``advice``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{argument} must be a whole number of at least 1, got {describe(value)}; {advice}"
        )
    if value < 1:
        raise too_small(f"{argument} must be at least 1, got {value}; {advice}")
    return int(value)


def printable_name(argument: str, value: object, expected: str) -> str:
    """``value`` if it is a non-empty string of printable characters, as Tango names are.

    Raises TypeError for anything but a string, and ValueError for an empty one or one
    holding a character that is not printable (a lone surrogate such as ``"\\udcff"``,
    which no Tango call can take, or a control character); ``expected`` describes what
    a good value looks like.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string such as {expected}, got {describe(value)}")
    if not value.strip():
        raise ValueError(f"{argument} is empty; expected a name such as {expected}")
    if not value.isprintable():
        index, character = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        raise ValueError(
            f"{argument} {value!r} holds the unprintable character {character!r} at index "
            f"{index}; expected printable text such as {expected}"
        )
    return value


def require_callable(argument: str, value: object, expected: str) -> None:
    """Raise TypeError, naming ``argument``, unless ``value`` can be called."""
    if not callable(value):
        raise TypeError(f"{argument} must be callable ({expected}), got {describe(value)}")
