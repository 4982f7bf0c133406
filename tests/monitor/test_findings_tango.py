"""Each kind of finding, caused for real by a device written to cause it, and seen by the
monitor's engine in polls of the real collector; with the healthy twin beside it, and the
same devices at rest beforehand, showing none.

The scenarios are in `tests.monitor.findings.scenarios`: they wait for conditions on the
devices, never for a time, so each finding comes after as many polls on a slow machine
as on a fast one.  `WAIT_SECONDS` only bounds a test that would otherwise never end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import NoReturn, TypeVar

import pytest

from milonga.monitor import Poll, PollHistory, query_server
from milonga.monitor.findings import Diagnostician, Finding, Findings, Severity
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers
from tests.monitor.findings.scenarios import (
    ABSENT,
    CHURNER,
    FAST,
    FROZEN_TIMEOUT,
    ICE_NUMBER,
    PUSHER,
    RESTARTED,
    SLOW,
    STREAM,
    WAIT_SECONDS,
    WAITER,
    WAITING_PERIOD,
    Churn,
    Restarting,
    Steps,
    Streams,
    Waiting,
    Watch,
    answered,
    churning,
    frozen_server,
    idle,
    overflow,
    publishing,
    restart,
    running,
    shared_samples,
    slow_consumer,
    steady,
    take,
)
from tests.monitor.frozen import start_ice

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")

HEARTBEAT_SECONDS = 10.0
T = TypeVar("T")


class Diagnosis:
    """The findings of one watch's polls, made one poll at a time as the monitor does."""

    def __init__(self) -> None:
        self.history = PollHistory()
        self.diagnostician = Diagnostician()
        self.polls: list[Findings] = []
        self.taken: list[Poll] = []
        """The polls of `polls`."""

    def add(self, poll: Poll) -> Findings:
        findings = self.diagnostician.add(self.history.add(poll))
        self.polls.append(findings)
        self.taken.append(poll)
        return findings

    def add_all(self, polls: list[Poll]) -> list[Findings]:
        return [self.add(poll) for poll in polls]

    def until(self, kind: str, server: str, steps: Steps) -> Finding:
        """The first finding of ``kind`` about admin device ``server`` in the polls of
        ``steps``, taken until one holds; then closes ``steps``."""
        found = self._until(steps, lambda findings: of(kind, findings, server))
        if not found:
            self._fail(f"no {kind} finding about {server}")
        return found[0]

    def until_cleared(self, kind: str, server: str, steps: Steps) -> None:
        """Take the polls of ``steps`` until a finding of ``kind`` about ``server`` is
        cleared; then close ``steps``."""
        if not self._until(steps, lambda findings: cleared(kind, findings, server)):
            self._fail(f"the {kind} finding about {server} not cleared")

    def _until(self, steps: Steps, test: Callable[[Findings], T]) -> T | None:
        """The first true ``test`` of the findings of a poll of ``steps``; None if none
        is true within `WAIT_SECONDS`, or ``steps`` ends first."""
        deadline = time.monotonic() + WAIT_SECONDS
        with closing(steps):
            for poll in steps:
                result = test(self.add(poll))
                if result:
                    return result
                if time.monotonic() > deadline:
                    break
        return None

    def _fail(self, what: str) -> NoReturn:
        pytest.fail(
            f"{what} after {len(self.polls)} polls; the last poll's findings: "
            f"{[f.record() for f in self.polls[-1].active] if self.polls else None}"
        )

    def seen(self, kind: str, server: str | None = None) -> list[Finding]:
        """Every active finding of ``kind`` (about ``server``, if given) so far."""
        return [finding for findings in self.polls for finding in of(kind, findings, server)]


def of(kind: str, findings: Findings, server: str | None = None) -> list[Finding]:
    """The active findings of ``kind`` in ``findings``, about ``server`` if given."""
    return [
        finding
        for finding in findings.active
        if finding.kind == kind and server in (None, finding.subject.server)
    ]


def number(finding: Finding, name: str) -> float:
    """The figure ``name`` of ``finding``'s evidence, which must be a number."""
    value = finding.evidence[name]
    assert isinstance(value, int | float), f"{name} is {value!r} in {finding.record()}"
    return value


def cleared(kind: str, findings: Findings, server: str) -> bool:
    """Whether ``findings`` say a finding of ``kind`` about ``server`` no longer holds."""
    return any(
        c.finding.kind == kind and c.finding.subject.server == server for c in findings.cleared
    ) and not of(kind, findings, server)


@pytest.fixture(scope="module")
def streams(tango_sandbox: TangoSandbox) -> Iterator[Streams]:
    """The publisher with its slow and fast subscribers, shared by this module's tests."""
    with running(Streams(tango_sandbox)) as system:
        yield system


@pytest.fixture
def watch(streams: Streams) -> Iterator[Watch]:
    with Watch(streams.sandbox, streams.devices) as watch:
        yield watch


def test_a_callback_slower_than_the_pushes_is_a_slow_callback(
    streams: Streams, watch: Watch
) -> None:
    diagnosis = Diagnosis()
    slow, fast = watch.admin(SLOW), watch.admin(FAST)
    with watch.sampling():
        healthy = diagnosis.add_all(take(steady(streams, watch), 3))
        finding = diagnosis.until("slow-callback", slow, slow_consumer(streams, watch))
        after = diagnosis.add(take(steady(streams, watch), 1)[0])

    assert not any(of("slow-callback", findings) for findings in healthy)
    assert finding.severity is Severity.WARNING
    assert finding.subject.stream == STREAM
    assert number(finding, "processing_median_us") > number(finding, "push_gap_us")
    assert finding.evidence["publisher"] == watch.admin(PUSHER)
    assert "Every other subscription" in finding.message
    assert diagnosis.seen("slow-callback", fast) == []
    assert cleared("slow-callback", after, slow)


def test_a_subscriber_whose_lag_grows_is_falling_behind_from_counters_alone(
    streams: Streams, watch: Watch
) -> None:
    diagnosis = Diagnosis()
    slow, fast = watch.admin(SLOW), watch.admin(FAST)
    healthy = diagnosis.add_all(take(steady(streams, watch), 2))
    finding = diagnosis.until("falling-behind", slow, slow_consumer(streams, watch))
    after = diagnosis.add(take(steady(streams, watch), 1)[0])

    assert not any(of("falling-behind", findings) for findings in healthy)
    assert finding.severity is Severity.WARNING
    assert finding.subject.stream == STREAM
    assert 0 <= number(finding, "lag_before") < number(finding, "lag")
    assert diagnosis.seen("falling-behind", fast) == []
    assert query_server(streams.sandbox.trl(SLOW)).perf_monitoring is False
    assert cleared("falling-behind", after, slow)


def test_events_dropped_past_the_high_water_mark_are_missed_events(
    streams: Streams, watch: Watch
) -> None:
    diagnosis = Diagnosis()
    slow, fast = watch.admin(SLOW), watch.admin(FAST)
    healthy = diagnosis.add_all(take(steady(streams, watch), 2))
    finding = diagnosis.until("missed-events", slow, overflow(streams, watch))
    after = diagnosis.add(take(steady(streams, watch), 1)[0])

    assert not any(of("missed-events", findings) for findings in healthy)
    assert finding.severity is Severity.ERROR
    assert finding.subject.stream == STREAM
    assert number(finding, "gaps") >= 1
    assert number(finding, "events_lost") >= number(finding, "gaps")
    assert diagnosis.seen("missed-events", fast) == []
    assert cleared("missed-events", after, slow)  # it holds for that poll only


def test_subscribing_and_unsubscribing_poll_after_poll_is_subscription_churn(
    streams: Streams,
) -> None:
    diagnosis = Diagnosis()
    with (
        running(Churn(streams.sandbox)) as churn,
        Watch(streams.sandbox, (PUSHER, FAST, CHURNER)) as watch,
    ):
        healthy = diagnosis.add_all(take(steady(streams, watch), 3))
        churner, fast = watch.admin(CHURNER), watch.admin(FAST)
        finding = diagnosis.until("subscription-churn", churner, churning(churn, streams, watch))
        diagnosis.until_cleared("subscription-churn", churner, steady(streams, watch))

    assert not any(of("subscription-churn", findings) for findings in healthy)
    assert finding.severity is Severity.WARNING
    assert number(finding, "subscriptions_removed") >= 1
    assert diagnosis.seen("subscription-churn", fast) == []


def test_a_subscription_waiting_longer_than_a_heartbeat_is_not_connected(
    streams: Streams,
) -> None:
    diagnosis = Diagnosis()
    with (
        running(Waiting(streams.sandbox)),
        Watch(streams.sandbox, (WAITER, FAST)) as watch,
    ):
        waiter = watch.admin(WAITER)
        finding = diagnosis.until("not-connected", waiter, idle(watch, WAITING_PERIOD))
        fast = watch.admin(FAST)

    first, found = diagnosis.polls[0].time, diagnosis.polls[-1].time
    assert (found - first).total_seconds() > HEARTBEAT_SECONDS
    assert len(diagnosis.seen("not-connected")) == 1  # none before a heartbeat period
    assert finding.severity is Severity.WARNING
    assert finding.subject.stream == f"{ABSENT}/level.change"
    assert diagnosis.seen("not-connected", fast) == []


def test_a_frozen_server_is_not_answering(
    streams: Streams, sandbox_servers: SandboxServers
) -> None:
    """The frozen server is not answering at each poll, counted; the healthy one is not
    reported at any poll it answered.  Each poll waits only `FROZEN_TIMEOUT` for the
    servers, so on a busy machine the healthy one may miss some polls too: the test
    takes polls until it answered two with the frozen one silent."""
    diagnosis = Diagnosis()
    server, device = start_ice(sandbox_servers, ICE_NUMBER)
    with Watch(streams.sandbox, (device, PUSHER), FROZEN_TIMEOUT) as watch:
        ice, pusher = watch.admin(device), watch.admin(PUSHER)
        healthy = diagnosis.add_all(list(answered(watch)))[-1]
        frozen = diagnosis.add_all(
            until_polls(frozen_server(streams.sandbox, server, watch), answers(pusher, 2))
        )
        after = diagnosis.add_all(list(answered(watch)))[-1]

    assert not of("server-not-answering", healthy)
    silent = [of("server-not-answering", findings, ice) for findings in frozen]
    assert [f.evidence["polls"] for found in silent for f in found] == list(
        range(1, len(frozen) + 1)
    )
    assert silent[-1][0].severity is Severity.ERROR
    assert "no answer" in str(silent[-1][0].evidence["error"])
    assert [bool(of("server-not-answering", findings, pusher)) for findings in diagnosis.polls] == [
        not answered_by(pusher, poll) for poll in diagnosis.taken
    ]
    assert cleared("server-not-answering", after, ice)


def answers(server: str, count: int) -> Callable[[list[Poll]], bool]:
    """Whether ``server`` answered ``count`` of the polls so far."""
    return lambda polls: sum(answered_by(server, poll) for poll in polls) >= count


def answered_by(server: str, poll: Poll) -> bool:
    """Whether admin device ``server`` answered ``poll``."""
    return any(r.server.admin == server and r.snapshot is not None for r in poll.replies)


def until_polls(steps: Steps, enough: Callable[[list[Poll]], bool]) -> list[Poll]:
    """The polls of ``steps`` until ``enough`` of them were taken; then closes ``steps``.
    Fails if that takes longer than `WAIT_SECONDS` (a safety net, not a time bound)."""
    deadline = time.monotonic() + WAIT_SECONDS
    polls: list[Poll] = []
    with closing(steps):
        for poll in steps:
            polls.append(poll)
            if enough(polls):
                return polls
            if time.monotonic() > deadline:
                break
    pytest.fail(f"not enough polls after {len(polls)} of them")


def test_polls_are_stamped_with_local_time_and_its_utc_offset(watch: Watch) -> None:
    poll = watch.poll()

    assert poll.time.utcoffset() == poll.time.astimezone().utcoffset()
    assert poll.time.tzinfo is not None


def test_a_publisher_whose_counters_went_down_restarted(tango_sandbox: TangoSandbox) -> None:
    diagnosis = Diagnosis()
    with (
        running(Restarting(tango_sandbox)) as restarting,
        Watch(tango_sandbox, restarting.devices) as watch,
    ):
        server = watch.admin(RESTARTED)
        healthy = diagnosis.add_all(take(publishing(restarting, watch), 2))
        finding = diagnosis.until(
            "server-restarted", server, restart(restarting, watch, silent=False)
        )
        after = diagnosis.add(take(publishing(restarting, watch), 1)[0])

    assert not any(of("server-restarted", findings) for findings in healthy)
    assert finding.severity is Severity.WARNING
    assert finding.evidence["counters_down"] == 1
    assert f"{RESTARTED}/level.change" in finding.message
    assert cleared("server-restarted", after, server)  # it holds for that poll only


def test_another_client_emptying_the_samples_is_samples_shared(
    streams: Streams, watch: Watch
) -> None:
    diagnosis = Diagnosis()
    pusher, fast = watch.admin(PUSHER), watch.admin(FAST)
    with watch.sampling():
        healthy = diagnosis.add_all(take(steady(streams, watch), 3))
        finding = diagnosis.until("samples-shared", pusher, shared_samples(streams, watch))
        shared = diagnosis.polls[-1]
        after = diagnosis.add(take(steady(streams, watch), 1)[0])

    assert not any(of("samples-shared", findings) for findings in healthy)
    assert finding.severity is Severity.WARNING
    assert finding.evidence["side"] == "server"
    assert number(finding, "samples") < number(finding, "events")
    assert [f.evidence["side"] for f in of("samples-shared", shared, fast)] == ["client"]
    assert cleared("samples-shared", after, pusher)
