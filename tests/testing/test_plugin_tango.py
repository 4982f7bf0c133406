"""The pytest plugin as its users meet it: test files run by pytester in a pytest of their
own (a subprocess, as a user's run is), against real servers in the session's sandbox.

Each run holds several tests, so that one subprocess start serves them all.  No outcome
depends on time: a test that must pass at once waits up to an hour (the outer timeout
would end it), a failure on a missing event waits half a second, which no machine can
shorten, and an event ruled out is already on its way when the assertion starts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers

COUNTER_SERVER, MODES_SERVER, PUSHER_SERVER = "Plugin/counter", "Plugin/modes", "Plugin/pusher"
INNER_TIMEOUT = 240.0
"""The safety limit of one inner run, in seconds."""

ASSERTIONS = """
import enum
import time

import pytest
import tango
from tango import DevState

COUNTER = "{counter}"
MODES = "{modes}"


class Mode(enum.IntEnum):
    IDLE = 0
    SCANNING = 1
    FAULT = 2


def increment(tango_events):
    tango_events.subscribe(COUNTER, "value")
    proxy = tango.DeviceProxy(COUNTER)
    start = proxy.value
    proxy.Increment()
    return start


def test_an_event_that_arrives_passes_at_once(tango_events):
    start = increment(tango_events)
    event = tango_events.assert_event(COUNTER, "value", value=start + 1, within=3600)
    assert (event.reason, event.quality) == ("Update", "ATTR_VALID")


def test_an_event_recorded_before_the_assertion_counts(tango_events):
    start = increment(tango_events)
    tango_events.assert_event(COUNTER, "value", value=start + 1)
    tango_events.assert_event(COUNTER, "value", value=start + 1, within=0)
    tango_events.assert_event(COUNTER, "value", predicate=lambda event: event.value > start)


def test_an_event_that_never_arrives(tango_events):
    tango_events.subscribe(COUNTER, "value")
    tango_events.assert_event(COUNTER, "value", value=-99, within=0.5)


def test_a_wrong_value(tango_events):
    start = increment(tango_events)
    first = tango_events.assert_event(COUNTER, "value", value=start + 1)
    tango_events.assert_event(COUNTER, "value", value=start + 1, after=first, within=0.5)


def test_enums_compare_by_label_member_or_number(tango_events):
    tango_events.subscribe(MODES, "mode")
    tango_events.subscribe(MODES, "State")
    tango.DeviceProxy(MODES).Scan()
    for expected in ("SCANNING", Mode.SCANNING, 1):
        tango_events.assert_event(MODES, "mode", value=expected)
    for expected in (DevState.MOVING, "MOVING"):
        tango_events.assert_event(MODES, "state", value=expected)


def test_an_enum_that_never_comes(tango_events):
    tango_events.subscribe(MODES, "mode")
    tango_events.assert_event(MODES, "mode", value=Mode.FAULT, within=0.5)


def test_no_event_passes(tango_events):
    start = increment(tango_events)
    tango_events.assert_event(COUNTER, "value", value=start + 1)
    tango_events.assert_no_event(COUNTER, "value", value=start + 2, during=0.2)


def test_no_event_fails_at_once(tango_events):
    tango_events.subscribe(COUNTER, "value")
    before = time.time()
    tango.DeviceProxy(COUNTER).Increment()
    tango_events.assert_no_event(COUNTER, "value", after=before, during=3600)


@pytest.mark.tango_event_health
def test_health_of_servers_that_do_not_exist():
    pass
"""

HEALTH = """
import threading

import pytest
import tango

PUSHER = "{pusher}"
FIRST_FLOOD = 20_000
MISSED = "API_MissedEvents"


@pytest.fixture
def slow_subscriber():
    \"\"\"A raw subscription to the pusher whose callback a gate holds, kept until the
    test's teardown, after the health check's last poll.\"\"\"
    proxy = tango.DeviceProxy(PUSHER)
    proxy.set_timeout_millis(600_000)
    gate, missed, seen = threading.Event(), threading.Event(), []
    gate.set()

    def slow(event):
        gate.wait()
        if event.err:
            if any(error.reason == MISSED for error in event.errors):
                missed.set()
        else:
            seen.append(event.attr_value.value)

    subscription = proxy.subscribe_event("level", tango.EventType.CHANGE_EVENT, slow)
    yield proxy, gate, missed, seen
    gate.set()
    proxy.unsubscribe_event(subscription)


@pytest.mark.tango_event_health
def test_too_slow_a_callback(slow_subscriber):
    \"\"\"Floods of events at a held callback, larger each round, until some are lost.\"\"\"
    proxy, gate, missed, seen = slow_subscriber
    flood = FIRST_FLOOD
    while not missed.is_set():
        gate.clear()
        proxy.Push(flood)
        gate.set()
        level = proxy.level
        # Drain the backlog; the last events of a flood may be lost, so push a marker
        # whenever nothing came since the last look: only a later event shows the gap.
        handled = -1
        while not missed.wait(0.5) and (not seen or seen[-1] < level):
            if len(seen) == handled:
                proxy.Push(1)
                level += 1
            handled = len(seen)
        flood *= 2


@pytest.mark.tango_event_health
def test_a_healthy_test(tango_events):
    tango_events.subscribe(PUSHER, "level")
    tango.DeviceProxy(PUSHER).Push(3)
    level = tango.DeviceProxy(PUSHER).level
    tango_events.assert_event(PUSHER, "level", value=level)
"""


@dataclass(frozen=True)
class Devices:
    counter: str
    modes: str
    pusher: str


@pytest.fixture(scope="module")
def devices(tango_sandbox: TangoSandbox) -> Iterator[Devices]:
    """A Counter (value starting at 5), a Modes and a Pusher, in three servers."""
    servers = SandboxServers(tango_sandbox)
    try:
        found = Devices(
            servers.add_device(COUNTER_SERVER, "Counter", "test/plugin/counter", {"Start": 5}),
            servers.add_device(MODES_SERVER, "Modes", "test/plugin/modes"),
            servers.add_device(PUSHER_SERVER, "Pusher", "test/plugin/pusher"),
        )
        tango_sandbox.start_servers(
            {
                COUNTER_SERVER: "tests.devices.counter",
                MODES_SERVER: "tests.devices.modes",
                PUSHER_SERVER: "tests.monitor.findings.devices",
            }
        )
        yield found
    finally:
        servers.cleanup()


def run(
    pytester: pytest.Pytester, sandbox: TangoSandbox, source: str, ini: str, *args: str
) -> pytest.RunResult:
    """Run ``source`` as a test file in a pytest of its own, with ``ini`` as its ini file,
    against the sandbox's database."""
    pytester.makeini(f"[pytest]\n{ini}")
    pytester.makepyfile(test_inner=source)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TANGO_HOST", sandbox.tango_host)
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-rA", *args, timeout=INNER_TIMEOUT
        )


def test_assertions_pass_and_fail_as_a_user_expects(
    pytester: pytest.Pytester, tango_sandbox: TangoSandbox, devices: Devices
) -> None:
    source = ASSERTIONS.format(counter=devices.counter, modes=devices.modes)
    ini = "tango_event_timeout = 60\ntango_event_health_servers = test/plugin/nowhere\n"
    result = run(pytester, tango_sandbox, source, ini)
    result.assert_outcomes(passed=4, failed=5)
    failed = {
        line.split("::")[1].split(" ")[0]
        for line in result.outlines
        if line.startswith("FAILED test_inner.py::")
    }
    assert failed == {
        "test_an_event_that_never_arrives",
        "test_a_wrong_value",
        "test_an_enum_that_never_comes",
        "test_no_event_fails_at_once",
        "test_health_of_servers_that_do_not_exist",
    }
    result.stdout.fnmatch_lines(
        [
            "*_ test_an_event_that_never_arrives _*",
            "E * no event of test/plugin/counter/value.change with value -99 arrived within "
            "0.5 s (counting every event since the subscription).",
            "E * 1 event(s) of test/plugin/counter/value.change recorded, at seconds since "
            "the test started:",
            "E *t (s)*reason*quality*value",
            "E *SubSuccess*ATTR_VALID*",
            "E *Its subscription reported no missed events.",
            "*_ test_a_wrong_value _*",
            "E * no event of test/plugin/counter/value.change with value * arrived within "
            "0.5 s (counting events after the one at * s).",
            "E * 2 event(s) of *",
            "E *SubSuccess*ATTR_VALID*",
            "E *Update*ATTR_VALID*",
            "*_ test_an_enum_that_never_comes _*",
            "E * no event of test/plugin/modes/mode.change with value Mode.FAULT (2) arrived*",
            "E *SubSuccess*ATTR_VALID*SCANNING (1)",
            "*_ test_no_event_fails_at_once _*",
            "E * an event of test/plugin/counter/value.change arrived at * s, where none was "
            "expected (for 3600 s, counting events from * s).",
            "E * >*Update*ATTR_VALID*",
            "*_ test_health_of_servers_that_do_not_exist _*",
            "tango event health: *test/plugin/nowhere*",
        ]
    )


def test_the_health_check_fails_a_test_whose_callback_loses_events(
    pytester: pytest.Pytester, tango_sandbox: TangoSandbox, devices: Devices
) -> None:
    source = HEALTH.format(pusher=devices.pusher)
    ini = f"tango_event_timeout = 60\ntango_event_health_servers = {devices.pusher}\n"
    result = run(pytester, tango_sandbox, source, ini)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_too_slow_a_callback _*",
            "the Tango event system was unhealthy during the test:",
            "  client/*: test/plugin/pusher/level.change missed events * time(s)",
            "*- Captured tango event health call -*",
            "Problems:",
            "*error: missed-events: client/* lost * event(s) of test/plugin/pusher/level.change*",
            "*/dserver/Plugin/pusher (from *test/plugin/pusher)*",
            "FAILED test_inner.py::test_too_slow_a_callback*",
        ]
    )
    healthy = result.stdout.str().split("PASSED test_inner.py::test_a_healthy_test")[0]
    assert "No missed events and no error finding." in healthy


def test_the_health_check_of_every_test_warns_instead_when_told(
    pytester: pytest.Pytester, tango_sandbox: TangoSandbox, devices: Devices
) -> None:
    unmarked = HEALTH.replace("@pytest.mark.tango_event_health\n", "")
    source = unmarked.format(pusher=devices.pusher)
    ini = "tango_event_timeout = 60\ntango_event_health = warn\n"
    result = run(pytester, tango_sandbox, source, ini, "--tango-event-health")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        ["*TangoEventHealthWarning: the Tango event system was unhealthy during the test:*"]
    )


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("tango_event_timeout = soon", "*tango_event_timeout = 'soon' is not a number*"),
        (
            "tango_event_timeout = 0",
            "*tango_event_timeout = '0' is not a number of seconds above 0*",
        ),
        ("tango_event_health = maybe", "*tango_event_health = 'maybe' is not one of fail, warn*"),
    ],
)
def test_bad_ini_options_stop_the_run_saying_why(
    pytester: pytest.Pytester, ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_inner="def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_loading_the_plugin_imports_no_tango(pytester: pytest.Pytester) -> None:
    probe = "import sys, milonga.testing.plugin; print(sorted({'tango'} & set(sys.modules)))"
    result = pytester.run(sys.executable, "-c", probe, timeout=INNER_TIMEOUT)
    assert result.outlines == ["[]"]
