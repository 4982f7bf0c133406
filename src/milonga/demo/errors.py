"""The one error `milonga demo` reports to its user."""

from __future__ import annotations


class DemoError(Exception):
    """The demo could not tell its story; the message says what went wrong, what the demo
    expected, and what to do."""
