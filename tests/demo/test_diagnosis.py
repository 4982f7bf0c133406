"""The diagnosis, on polls recorded from a real run of the demo (``data/record.py``): the
monitor's figures over the whole run, its slow-callback rule on them, and the findings
its engine made poll by poll."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.demo.comparison import DemoRun, ScanOutcome, render_comparison
from milonga.demo.figures import Diagnosis, caught_up, diagnose
from milonga.demo.report import render_diagnosis
from milonga.monitor import Poll, PollHistory, PollReport, Reply, Severity, Subject, findings_of
from milonga.monitor.figures import stream_of_topic
from milonga.monitor.stats import duration

HW = "dserver/MyServer/hw"
TOP = "dserver/MyServer/top"
POSITION = "foo/bar/hw/position.change"
MODE = "foo/bar/hw/mode.change"


def reports_of(polls: Sequence[Poll]) -> list[PollReport]:
    history = PollHistory()
    return [history.add(poll) for poll in polls]


def diagnosis_of(polls: Sequence[Poll]) -> Diagnosis:
    """The diagnosis of ``polls``, with the findings the monitor's engine makes of them,
    as the demo's live monitor has them."""
    return diagnose(reports_of(polls), findings_of(polls))


def text(lines: list[str]) -> str:
    """Rendered lines as one paragraph, so that wrapping does not matter."""
    return " ".join(" ".join(lines).split())


def test_the_cause_is_the_slow_callback_rule_on_the_whole_run(plain_polls: list[Poll]) -> None:
    diagnosis = diagnosis_of(plain_polls)

    (cause,) = diagnosis.causes
    assert (cause.kind, cause.subject) == ("slow-callback", Subject(TOP, POSITION))
    assert cause.evidence["publisher"] == HW
    processing, push_gap = cause.evidence["processing_median_us"], cause.evidence["push_gap_us"]
    assert isinstance(processing, (int, float))
    assert isinstance(push_gap, (int, float))
    # A 300 ms handler against a push every 100 ms, which the counters put at most at
    # 115 ms: the three 5 s intervals in which 130 events were pushed.
    assert processing > 2 * push_gap
    assert f"- Cause: {cause.message}" in text(render_diagnosis(diagnosis))


def test_the_monitor_raised_slow_callback_during_the_plain_run_only(
    plain_polls: list[Poll], fixed_polls: list[Poll]
) -> None:
    plain, fixed = diagnosis_of(plain_polls), diagnosis_of(fixed_polls)

    slow = [r for r in plain.raised if r.kind == "slow-callback"]
    assert [(r.subject, r.severity) for r in slow] == [(Subject(TOP, POSITION), Severity.WARNING)]
    assert slow[0].polls > len(plain_polls) / 2, "it held for most of the run"
    assert (
        f"tango-event-monitor raised these findings: slow-callback (warning) on {TOP}: "
        f"{POSITION} at {slow[0].polls} of {len(plain_polls)} snapshots"
    ) in text(render_diagnosis(plain))
    assert not [r for r in fixed.raised if r.kind == "slow-callback"]


def test_the_findings_are_tallied_over_the_polls_they_held_at(plain_polls: list[Poll]) -> None:
    polls = findings_of(plain_polls)

    raised = diagnose(reports_of(plain_polls), polls).raised

    assert raised, "the plain run has findings"
    for each in raised:
        held = [
            f for findings in polls for f in findings.active if f.key == (each.kind, each.subject)
        ]
        assert each.polls == len(held)
        assert each.severity == max(f.severity for f in held)


def test_the_consumer_handled_fewer_events_per_second_than_were_pushed(
    plain_polls: list[Poll],
) -> None:
    figures = diagnosis_of(plain_polls).figures
    pushed = figures.publisher(HW)
    handled = figures.consumer(TOP)

    assert pushed is not None
    assert handled is not None
    assert pushed.rate is not None
    assert handled.rate is not None
    # A 300 ms handler against 10 Hz pushes.
    assert handled.rate < pushed.rate / 2


def test_the_latency_grew_far_beyond_the_gap_between_pushes(plain_polls: list[Poll]) -> None:
    figures = diagnosis_of(plain_polls).figures
    consumer = figures.consumer(TOP)
    (position,) = [s for s in figures.streams if s.name == POSITION]

    assert consumer is not None
    assert consumer.latency is not None
    assert position.push_gap is not None
    assert consumer.latency.maximum > 10 * position.push_gap


def test_every_event_arrived_in_the_end(plain_polls: list[Poll]) -> None:
    diagnosis = diagnosis_of(plain_polls)

    assert {stream.name for stream in diagnosis.streams} == {POSITION, MODE}
    assert all(stream.pushed > 0 for stream in diagnosis.streams)
    assert diagnosis.missed == 0
    assert diagnosis.behind == 0
    assert "they were late, not lost" in text(render_diagnosis(diagnosis))


def test_events_still_in_flight_midway_are_not_called_missed(plain_polls: list[Poll]) -> None:
    busiest = max(
        range(1, len(plain_polls)), key=lambda i: diagnosis_of(plain_polls[: i + 1]).behind
    )
    midway = diagnosis_of(plain_polls[: busiest + 1])

    assert midway.behind > 0
    assert midway.missed == 0
    assert f"none was missed, but {midway.behind} had not arrived yet" in text(
        render_diagnosis(midway)
    )


def test_the_demo_waits_until_the_subscriber_has_caught_up(plain_polls: list[Poll]) -> None:
    reports = reports_of(plain_polls)
    behind = [diagnosis_of(plain_polls[: i + 1]).behind for i in range(len(plain_polls))]

    assert [caught_up(report) for report in reports] == [lag == 0 for lag in behind]
    assert caught_up(reports[-1])
    assert not all(caught_up(report) for report in reports)


def test_a_poll_the_publisher_did_not_answer_is_not_caught_up(plain_polls: list[Poll]) -> None:
    last = plain_polls[-1]
    silent = replace(
        last,
        replies=tuple(
            Reply.failed(r.server, "API_DeviceNotExported: gone") if r.server.admin == HW else r
            for r in last.replies
        ),
    )

    assert not caught_up(reports_of([*plain_polls[:-1], silent])[-1])


def with_missed_events(poll: Poll, missed: int) -> Poll:
    """``poll`` with ``missed`` more missed events on TOP's position subscription."""
    replies = []
    for reply in poll.replies:
        data = json.loads(json.dumps(reply.data))
        if reply.server.admin == TOP:
            for topic, subscription in data["client"]["event_callbacks"].items():
                if "position" in topic:
                    subscription["missed_event_count"] += missed
        replies.append(Reply.answered(reply.server, json.dumps(data)))
    return replace(poll, replies=tuple(replies))


def test_missed_events_are_reported_as_lost(plain_polls: list[Poll]) -> None:
    polls = [*plain_polls[:-1], with_missed_events(plain_polls[-1], 3)]

    diagnosis = diagnosis_of(polls)

    assert diagnosis.missed == 3
    rendered = text(render_diagnosis(diagnosis))
    assert "some were lost on the way: the subscriber found a server counter skipped 3" in rendered
    assert f"missed-events (error) on {TOP}: {POSITION} at 1 of" in rendered


def sampled_side(reply: Reply) -> str:
    """The side of ``reply``'s process whose perf samples the figures use: HW publishes,
    TOP subscribes."""
    return "server" if reply.server.admin == HW else "client"


def with_first_gaps(poll: Poll, micros: int) -> Poll:
    """``poll`` with a gap of ``micros`` in the first perf sample of each process."""
    replies = []
    for reply in poll.replies:
        data = json.loads(json.dumps(reply.data))
        data[sampled_side(reply)]["perf"][0]["micros_since_last_event"] = micros
        replies.append(Reply.answered(reply.server, json.dumps(data)))
    return replace(poll, replies=tuple(replies))


def first_sampled(polls: list[Poll]) -> int:
    """The index of the first of ``polls`` with perf samples from each process."""
    return next(
        i
        for i, poll in enumerate(polls)
        if all((reply.data or {})[sampled_side(reply)]["perf"] for reply in poll.replies)
    )


SAMPLING_OFF_MICROS = 40_000_000
"""A gap spanning the 40 s that sampling was off, as cppTango reports it when sampling is
turned on again in a process that sampled before."""


def test_the_first_gap_after_sampling_is_turned_on_is_left_out(plain_polls: list[Poll]) -> None:
    first = first_sampled(plain_polls)
    polls = list(plain_polls)
    polls[first] = with_first_gaps(polls[first], SAMPLING_OFF_MICROS)

    figures, recorded = diagnosis_of(polls).figures, diagnosis_of(plain_polls).figures

    # The recorded run started fresh processes, whose first samples have no gap at all.
    assert figures.publisher(HW) == recorded.publisher(HW)
    assert figures.consumer(TOP) == recorded.consumer(TOP)


def test_later_first_samples_of_a_poll_keep_their_gaps(plain_polls: list[Poll]) -> None:
    later = first_sampled(plain_polls) + 1
    polls = list(plain_polls)
    polls[later] = with_first_gaps(polls[later], SAMPLING_OFF_MICROS)

    figures = diagnosis_of(polls).figures
    pushed, handled = figures.publisher(HW), figures.consumer(TOP)

    assert pushed is not None
    assert pushed.gaps is not None
    assert handled is not None
    assert handled.gaps is not None
    assert pushed.gaps.maximum == handled.gaps.maximum == SAMPLING_OFF_MICROS


def test_the_diagnosis_names_cause_rates_latency_and_counts(plain_polls: list[Poll]) -> None:
    rendered = text(render_diagnosis(diagnosis_of(plain_polls)))

    assert f"Diagnosis, from the {len(plain_polls)} snapshots" in rendered
    assert f"Cause: {TOP} takes" in rendered
    assert f"to handle one event of {POSITION} (median), longer than the" in rendered
    assert f"between two pushes by {HW}" in rendered
    assert f"Every other subscription of {TOP} waits behind it" in rendered
    assert f"Rates: {HW} pushed" in rendered
    assert f"Latency: events reached their first callback in {TOP} up to" in rendered
    assert f"{POSITION} 130 pushed, 130 received, 0 missed" in rendered
    assert "Monitor: while the run went on, tango-event-monitor raised these findings" in rendered


def test_with_the_scheduler_the_consumer_keeps_up(fixed_polls: list[Poll]) -> None:
    diagnosis = diagnosis_of(fixed_polls)
    pushed = diagnosis.figures.publisher(HW)
    handled = diagnosis.figures.consumer(TOP)

    assert diagnosis.causes == ()
    assert pushed is not None
    assert handled is not None
    assert pushed.rate is not None
    assert handled.rate is not None
    assert handled.rate == pytest.approx(pushed.rate, rel=0.1)
    assert handled.latency is not None
    assert pushed.gaps is not None
    assert handled.latency.maximum < pushed.gaps.median
    assert diagnosis.missed == diagnosis.behind == 0
    rendered = text(render_diagnosis(diagnosis))
    assert "Cause: none left; every stream is handled faster than it is pushed" in rendered
    assert f"{POSITION} in " in rendered
    assert "late" not in rendered
    assert "tango-event-monitor raised no finding at any of the" in rendered


def test_the_comparison_shows_both_runs_side_by_side(
    plain_polls: list[Poll], fixed_polls: list[Poll]
) -> None:
    before = DemoRun(ScanOutcome(30.5, "Timeout waiting for Mode.IDLE"), diagnosis_of(plain_polls))
    after = DemoRun(ScanOutcome(13.1), diagnosis_of(fixed_polls))

    lines = render_comparison(before, after, ("as it is", "with the scheduler"))

    assert lines[0].split() == ["as", "it", "is", "with", "the", "scheduler"]
    rows = {line.split("  ")[2].strip(): line for line in lines[1:]}
    assert "failed after 30.5 s" in rows["Scan()"]
    assert rows["Scan()"].endswith("returned after 13.1 s")
    assert f"{POSITION}: handling one event (median)" in rows
    assert rows[f"{TOP}: events handled"].endswith("events/s")
    assert f"{TOP}: highest latency" in rows
    assert rows["missed events"].split()[-2:] == ["0", "0"]
    assert "slow-callback" in rows["monitor findings"]
    assert rows["monitor findings"].endswith("  none")
    assert len({len(line) for line in lines}) == 1, "the columns line up"


def test_a_server_that_did_not_answer_is_left_out(plain_polls: list[Poll]) -> None:
    silent = [
        replace(
            poll,
            replies=tuple(
                Reply.failed(r.server, "API_DeviceNotExported: gone") if r.server.admin == HW else r
                for r in poll.replies
            ),
        )
        for poll in plain_polls
    ]

    diagnosis = diagnosis_of(silent)

    assert diagnosis.streams == ()
    assert diagnosis.figures.publisher(HW) is None
    rendered = text(render_diagnosis(diagnosis))
    assert "Cause: no stream has both a push gap and processing times to compare" in rendered
    assert f"server-not-answering (error) on {HW} at {len(silent)} of" in rendered


@pytest.mark.parametrize(
    ("topic", "stream"),
    [
        ("tango://127.0.0.1:1/foo/bar/hw/position.idl5_change", POSITION),
        ("foo/bar/hw/mode.idl5_archive", "foo/bar/hw/mode.archive"),
        ("foo/bar/hw/mode.change", MODE),
    ],
)
def test_topics_name_the_publishers_stream(topic: str, stream: str) -> None:
    assert stream_of_topic(topic) == stream


@given(st.floats(min_value=1e-3, max_value=1e9))
def test_durations_are_shown_in_a_unit_that_keeps_them_at_least_one(micros: float) -> None:
    number, unit = duration(micros).split()

    assert unit in {"μs", "ms", "s"}
    assert float(number) >= 1 or unit == "μs"


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (99_995, "100 ms"),
        (9.999, "10.0 μs"),
        (0.5, "0.50 μs"),
        (301_234, "301 ms"),
        (26.18e6, "26.2 s"),
    ],
)
def test_durations_keep_three_significant_figures(micros: float, shown: str) -> None:
    assert duration(micros) == shown
