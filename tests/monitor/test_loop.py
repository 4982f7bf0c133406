"""The poll loop and its outputs: what each output gets, how the loop ends, and a loop on
another thread stopped from the main one."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import pytest

from milonga.monitor import Collector, MonitoredServer, Poll, PollHistory, Reply, resolve_servers
from milonga.monitor.analysis import PollUpdate
from milonga.monitor.collector import CallError
from milonga.monitor.findings import Finding, Findings, Severity, Subject
from milonga.monitor.jsonl import JsonLinesWriter, poll_record
from milonga.monitor.loop import PollLoop
from milonga.monitor.outputs import JsonLinesOutput, Output, OutputError, Screen, WorstSeverity
from milonga.testing import SandboxServers

WAIT_SECONDS = 60.0
A_DAY = 86400.0
"""A period no test waits for: a loop that ends did not wait it out."""
TIME = datetime(2026, 3, 17, 12, 0, 0)
SERVER = MonitoredServer("dserver/MonitorPub/1")


class Recorder:
    """An output that keeps every update, and tells when it has some."""

    def __init__(self) -> None:
        self.updates: list[PollUpdate] = []
        self._changed = threading.Condition()

    def write(self, update: PollUpdate) -> None:
        with self._changed:
            self.updates.append(update)
            self._changed.notify_all()

    def wait_for(self, count: int) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.updates) >= count, WAIT_SECONDS):
                pytest.fail(f"the loop never sent {count} updates: it sent {len(self.updates)}")


class Failing:
    """An output that fails every time."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, update: PollUpdate) -> None:
        self.calls += 1
        raise OutputError("this output broke")


class Said(list[tuple[str, str]]):
    """What a loop told the user, as ``(kind, text)``."""

    def __call__(self, kind: str, text: str) -> None:
        self.append((kind, text))


def loop_of(
    collector: Collector,
    *outputs: Output,
    period: float = A_DAY,
    count: int | None = None,
    sampling: bool = False,
    screen: Screen | None = None,
    say: Said | None = None,
) -> PollLoop:
    """A loop over ``collector`` with ``outputs``, by default polling once a day."""
    return PollLoop(
        collector,
        outputs,
        period=period,
        count=count,
        sampling=sampling,
        screen=screen,
        say=say if say is not None else Said(),
        prog="tango-event-monitor",
    )


@pytest.fixture
def nothing() -> Iterator[Collector]:
    """A collector of no server: the loop's own behaviour, without Tango calls."""
    with Collector([]) as collector:
        yield collector


def run_on_a_thread(loop: PollLoop) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_stop_from_another_thread_ends_the_wait_between_polls_at_once(
    nothing: Collector,
) -> None:
    recorder = Recorder()
    loop = loop_of(nothing, recorder)
    thread, errors = run_on_a_thread(loop)
    recorder.wait_for(1)  # the first poll is taken at once, the next one a day later

    loop.stop()
    thread.join(WAIT_SECONDS)

    assert not thread.is_alive(), "the loop still waits for its next poll"
    assert errors == []
    assert len(recorder.updates) == 1


@pytest.mark.parametrize("last_poll", [True, False])
def test_with_sampling_a_stop_between_polls_takes_one_last_poll_unless_told_not_to(
    nothing: Collector, last_poll: bool
) -> None:
    recorder = Recorder()
    loop = loop_of(nothing, recorder, sampling=True)
    thread, errors = run_on_a_thread(loop)
    recorder.wait_for(1)

    loop.stop(last_poll=last_poll)
    thread.join(WAIT_SECONDS)

    assert not thread.is_alive()
    assert errors == []
    assert len(recorder.updates) == (2 if last_poll else 1)


def test_count_polls_end_the_loop_without_a_last_poll(nothing: Collector) -> None:
    recorder = Recorder()

    loop_of(nothing, recorder, period=0.1, count=3, sampling=True).run()

    assert len(recorder.updates) == 3


def test_every_output_gets_each_poll_with_its_report_and_findings(nothing: Collector) -> None:
    first, second, out = Recorder(), Recorder(), io.StringIO()
    screen = Screen(out, lambda update: f"{update.poll.time.isoformat()}\n")

    loop_of(nothing, first, second, period=0.1, count=2, screen=screen).run()

    assert first.updates == second.updates
    assert out.getvalue().splitlines() == [u.poll.time.isoformat() for u in first.updates]
    for update in first.updates:
        assert update.report.time == update.findings.time == update.poll.time


def test_a_failing_output_lets_the_others_have_the_poll_then_ends_the_loop(
    nothing: Collector,
) -> None:
    failing, after, out, said = Failing(), Recorder(), io.StringIO(), Said()
    loop = loop_of(nothing, failing, after, screen=Screen(out, lambda _: "shown\n"), say=said)

    with pytest.raises(OutputError, match="this output broke"):
        loop.run()

    assert failing.calls == 1
    assert len(after.updates) == 1
    assert out.getvalue() == "shown\n"
    assert said == [("error", "this output broke")]


def test_sampling_refused_at_the_start_ends_the_loop_before_any_poll(
    sandbox_servers: SandboxServers,
) -> None:
    # Defined but not started: it cannot turn sampling on.
    trl = sandbox_servers.add_device("MonitorRefuse/1", "Counter", "test/monitor/refuse")
    refused: list[Mapping[str, CallError]] = []

    def refuse(failures: Mapping[str, CallError]) -> None:
        refused.append(failures)
        raise RuntimeError("refused")

    recorder = Recorder()
    with Collector(resolve_servers([trl])) as collector:
        loop = loop_of(collector, recorder, sampling=True)
        with pytest.raises(RuntimeError, match="refused"):
            loop.run(on_sampling_failed=refuse)

    assert [list(failures) for failures in refused] == [[collector.servers[0].admin]]
    assert recorder.updates == []


def update_with(*findings: Finding) -> PollUpdate:
    poll = Poll(TIME, (Reply.failed(SERVER, "API_DeviceNotExported"),))
    return PollUpdate(poll, PollHistory().add(poll), Findings(TIME, findings))


def finding(severity: Severity) -> Finding:
    return Finding("server-not-answering", severity, Subject(SERVER.admin), "no answer", {})


def test_the_worst_severity_is_that_of_any_poll() -> None:
    worst = WorstSeverity()
    assert worst.worst is None

    for severities in [(), (Severity.WARNING,), (Severity.ERROR, Severity.INFO), ()]:
        worst.write(update_with(*(finding(severity) for severity in severities)))

    assert worst.worst is Severity.ERROR


def test_a_json_lines_file_that_fails_is_named_once(tmp_path: Path) -> None:
    update = update_with(finding(Severity.ERROR))
    with JsonLinesWriter(tmp_path / "polls.jsonl") as writer:
        JsonLinesOutput(writer, "polls.jsonl").write(update)
    assert (tmp_path / "polls.jsonl").read_text() == (
        poll_record(update.poll, update.findings) + "\n"
    )

    with JsonLinesWriter("/dev/full") as writer:
        full = JsonLinesOutput(writer, "/dev/full")
        with pytest.raises(OutputError, match="cannot write to /dev/full") as raised:
            full.write(update)
        full.write(update)  # nothing more: said once

    assert "give another file with -o" in str(raised.value)


def test_a_screen_that_fails_is_closed() -> None:
    with open("/dev/full", "w") as out:
        screen = Screen(out, lambda update: "x" * 100_000)  # more than one buffer
        with pytest.raises(OutputError, match="cannot write to standard output"):
            screen.write(update_with())

    assert screen.closed
