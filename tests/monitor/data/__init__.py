"""QueryEventSystem replies captured from real servers by `capture.py`, and ways to load them."""

from __future__ import annotations

from pathlib import Path

from milonga.monitor import Snapshot, parse_snapshot

HERE = Path(__file__).parent
TANGO_HOST = "127.0.0.1:40171"
"""The sandbox database the replies were captured with."""
COUNTER_STREAM = f"tango://{TANGO_HOST}/test/monitor/counter/value.change"
COUNTER_TOPIC = f"tango://{TANGO_HOST}/test/monitor/counter/value.idl5_change"


def text(name: str) -> str:
    """The reply saved as ``name``, e.g. ``publisher_1.json``."""
    return (HERE / name).read_text()


def snapshot(name: str) -> Snapshot:
    """The reply saved as ``name``, parsed."""
    return parse_snapshot(text(name))
