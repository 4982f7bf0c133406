"""Recorded polls of a real demo run (see ``tests/demo/data/record.py``), read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from milonga.monitor import Poll
from milonga.monitor.jsonl import read_polls

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def plain_polls() -> list[Poll]:
    """The run without the scheduler: Scan() timed out."""
    return read_polls(DATA / "plain.jsonl")


@pytest.fixture(scope="session")
def fixed_polls() -> list[Poll]:
    """The run with CallbackScheduler in both devices."""
    return read_polls(DATA / "fixed.jsonl")
