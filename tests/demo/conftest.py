"""Recorded polls of a real demo run (see ``tests/demo/data/record.py``), read back."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from milonga.monitor import MonitoredServer, Poll, Reply

DATA = Path(__file__).parent / "data"


def read_polls(path: Path) -> list[Poll]:
    """The polls of a JSON Lines file written by the monitor (or `record.py`)."""
    polls = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        replies = tuple(
            Reply.answered(MonitoredServer(admin), json.dumps(reply["data"]))
            if "data" in reply
            else Reply.failed(MonitoredServer(admin), reply["error"])
            for admin, reply in record["replies"].items()
        )
        polls.append(Poll(datetime.fromisoformat(record["time"]), replies))
    return polls


@pytest.fixture(scope="session")
def plain_polls() -> list[Poll]:
    """The run without the scheduler: Scan() timed out."""
    return read_polls(DATA / "plain.jsonl")


@pytest.fixture(scope="session")
def fixed_polls() -> list[Poll]:
    """The run with CallbackScheduler in both devices."""
    return read_polls(DATA / "fixed.jsonl")
