"""Shared set-up.  The fixtures (the session sandbox, per-test servers, tango_events) come
from milonga's pytest plugin, which installing milonga registers.

Mark a test that needs PyTango 10 with ``@pytest.mark.requires_pytango10("why")``: it is
skipped, saying why, on a PyTango older than 10.3 (`make pytest-pytango9` runs 9.5.1).

Property tests run under the ``milonga`` Hypothesis profile: no test may depend on how
fast the machine is, so there is no deadline per example and no health check that fails
a test because making its examples was slow.

A suite started in the background (``make test &``, nohup, some CI runners) inherits
SIGINT ignored, and so would every tool it starts; the tests that stop a tool with Ctrl-C
need the usual handling, so the suite restores it for itself and its children.
"""

from __future__ import annotations

import signal

import pytest
import tango
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]  # the plugin's own tests run test files of their own

settings.register_profile("milonga", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("milonga")

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
