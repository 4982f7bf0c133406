"""milonga's pytest plugin, registered through the ``pytest11`` entry point.

Installing milonga makes it available to every pytest run; ``-p no:milonga`` turns it off.
A test that uses none of its fixtures, options or marker is not touched: this module
imports only pytest at load, and Tango only when a fixture or the health check is used.

- Fixtures: ``tango_sandbox`` (one sandbox for the session), ``sandbox_servers`` (servers
  for one test), ``event_system_change`` (what one test changed in its process's event
  system) and ``tango_events`` (a `TangoEvents` recorder, closed after the test).
- Ini options: ``tango_event_timeout`` (seconds, default 5: how long ``tango_events``
  waits by default), ``tango_event_health`` (``fail`` or ``warn``) and
  ``tango_event_health_servers`` (servers whose event systems the health check polls too).
- ``--tango-event-health`` (every test) or the marker ``tango_event_health`` (one test):
  the event-system health check of `milonga.testing.health` around the test's call.
"""

# ruff: noqa: PLC0415 - fixtures import Tango when used, never when the plugin loads
from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from milonga.sandbox import TangoSandbox
    from milonga.testing.event_system import EventSystemChange
    from milonga.testing.health import Baseline, EventSystemHealth
    from milonga.testing.recorder import TangoEvents
    from milonga.testing.servers import SandboxServers

TIMEOUT_OPTION = "tango_event_timeout"
HEALTH_OPTION = "tango_event_health"
HEALTH_SERVERS_OPTION = "tango_event_health_servers"
HEALTH_MODES = ("fail", "warn")
HEALTH_SECTION = "tango event health"
DEFAULT_TIMEOUT = "5"

_health_key = pytest.StashKey["EventSystemHealth"]()
_started_key = pytest.StashKey[float]()


class TangoEventHealthWarning(pytest.PytestWarning):
    """A test under ``tango_event_health = warn`` missed events or had an error finding."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("milonga", "milonga: Tango event tests")
    group.addoption(
        "--tango-event-health",
        action="store_true",
        default=False,
        help="check the Tango event system of every test (see the marker tango_event_health)",
    )
    parser.addini(
        TIMEOUT_OPTION,
        "seconds tango_events waits for a subscription or an event by default (5)",
        default=DEFAULT_TIMEOUT,
    )
    parser.addini(
        HEALTH_OPTION,
        "what an unhealthy event system does to a checked test: fail (default) or warn",
        default="fail",
    )
    parser.addini(
        HEALTH_SERVERS_OPTION,
        "device servers (device, admin device, TRL or pattern; one per line) whose event "
        "systems the health check polls besides the test's own process",
        type="linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tango_event_health: poll the Tango event system before and after the test, report "
        "the monitor's diff and findings, and fail the test on missed events or an error "
        "finding (see --tango-event-health)",
    )
    event_timeout(config)  # a bad value is told before any test runs
    health_mode(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    health = config.stash.get(_health_key, None)
    if health is not None:
        health.close()


def event_timeout(config: pytest.Config) -> float:
    """The ini option ``tango_event_timeout``, in seconds; a usage error if it is not a
    finite number of seconds above 0 (with 0, every `subscribe` would fail)."""
    text = str(config.getini(TIMEOUT_OPTION)).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise pytest.UsageError(
            f"ini option {TIMEOUT_OPTION} = {text!r} is not a number of seconds above 0; "
            f"set it to a finite number above 0, such as {DEFAULT_TIMEOUT}: it is how long "
            "subscribe and assert_event wait by default"
        )
    return seconds


def health_mode(config: pytest.Config) -> str:
    """The ini option ``tango_event_health``: ``fail`` or ``warn``; a usage error if not."""
    mode = str(config.getini(HEALTH_OPTION)).strip().lower()
    if mode not in HEALTH_MODES:
        raise pytest.UsageError(
            f"ini option {HEALTH_OPTION} = {mode!r} is not one of {', '.join(HEALTH_MODES)}: "
            "fail fails an unhealthy test, warn only warns"
        )
    return mode


@pytest.fixture(scope="session")
def tango_sandbox() -> Iterator[TangoSandbox]:
    """A running sandbox shared by every test of the session."""
    from milonga.sandbox import TangoSandbox

    with TangoSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_servers(tango_sandbox: TangoSandbox) -> Iterator[SandboxServers]:
    """Servers for this test only, in the session's sandbox: every server the test
    defines is stopped and deleted afterwards, so the next test can reuse the names."""
    from milonga.testing.servers import SandboxServers

    servers = SandboxServers(tango_sandbox)
    try:
        yield servers
    finally:
        servers.cleanup()


@pytest.fixture
def event_system_change() -> EventSystemChange:
    """What this test changes in its own process's event system (needs PyTango 10.3)."""
    from milonga.testing.event_system import EventSystemChange

    return EventSystemChange()


@pytest.fixture
def tango_events(request: pytest.FixtureRequest) -> Iterator[TangoEvents]:
    """An event recorder for this test (`TangoEvents`); every stream it subscribed to is
    unsubscribed after the test."""
    from milonga.testing.recorder import TangoEvents

    started = request.node.stash.get(_started_key, None)
    recorder = TangoEvents(event_timeout(request.config), started=started)
    try:
        yield recorder
    finally:
        recorder.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note when the test starts: ``tango_events`` gives event times from then."""
    item.stash[_started_key] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Around a checked test's call: poll before, run it, poll after, add the report
    section, and fail or warn on an unhealthy event system."""
    if not (
        item.config.getoption("tango_event_health")
        or item.get_closest_marker("tango_event_health") is not None
    ):
        return (yield)
    health = _health(item.config)
    baseline = _begin(health)
    try:
        outcome = yield
    except BaseException:  # the test failed: its own failure stays the one reported
        _report(item, health.end(baseline).render())
        raise
    checkup = health.end(baseline)
    _report(item, checkup.render())
    if checkup.problems:
        _unhealthy(item, checkup.problems)
    return outcome


def _begin(health: EventSystemHealth) -> Baseline:
    """The poll before a test; the test fails, saying why, if the servers to poll cannot
    be found."""
    from milonga.monitor import MonitorSetupError

    try:
        return health.begin()
    except MonitorSetupError as error:
        message = f"tango event health: {error}"
    pytest.fail(message, pytrace=False)  # outside the except block: one error, not a chain


def _report(item: pytest.Item, text: str) -> None:
    item.add_report_section("call", HEALTH_SECTION, text)


def _unhealthy(item: pytest.Item, problems: tuple[str, ...]) -> None:
    """Fail ``item``, or warn, per the ini option ``tango_event_health``."""
    message = "the Tango event system was unhealthy during the test:\n" + "\n".join(
        f"  {line}" for line in problems
    )
    if health_mode(item.config) == "warn":
        item.warn(TangoEventHealthWarning(message))
        return
    pytest.fail(message, pytrace=False)


def _health(config: pytest.Config) -> EventSystemHealth:
    """The session's health checker, made at its first use."""
    health = config.stash.get(_health_key, None)
    if health is None:
        from milonga.testing.health import EventSystemHealth

        health = EventSystemHealth(config.getini(HEALTH_SERVERS_OPTION))
        config.stash[_health_key] = health
    return health
