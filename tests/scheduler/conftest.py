"""Fixtures of the scheduler's Tango tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from milonga import CallbackScheduler
from milonga.testing import SandboxServers
from tests.scheduler.helpers import COUNTER


@pytest.fixture
def scheduler() -> Iterator[CallbackScheduler]:
    """A scheduler named ``test-sched``, shut down after the test."""
    with CallbackScheduler(name="test-sched") as sched:
        yield sched


@pytest.fixture
def counter(sandbox_servers: SandboxServers) -> str:
    """The full TRL of a running Counter, test/sched/1, whose value starts at 5."""
    trl = sandbox_servers.add_device("Sched/1", "Counter", "test/sched/1", {"Start": 5})
    sandbox_servers.start("Sched/1", COUNTER)
    return trl
