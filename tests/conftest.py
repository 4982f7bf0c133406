"""Shared fixtures: the session sandbox and per-test servers from milonga.testing.

Mark a test that needs PyTango 10 with ``@pytest.mark.requires_pytango10("why")``: it is
skipped, saying why, on a PyTango older than 10.3 (`make pytest-pytango9` runs 9.5.1).
"""

from __future__ import annotations

import pytest
import tango

pytest_plugins = ["milonga.testing"]

# The newest PyTango 10 features tests use: ApiUtil.query_event_system is new in 10.3.
PYTANGO10 = tango.__version_info__ >= (10, 3)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires_pytango10(why): skip the test, saying why, before PyTango 10.3"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PYTANGO10:
        return
    for item in items:
        marker = item.get_closest_marker("requires_pytango10")
        if marker is not None:
            reason = f"needs PyTango 10.3, running {tango.__version__}"
            if marker.args:
                reason += f": {marker.args[0]}"
            item.add_marker(pytest.mark.skip(reason=reason))
