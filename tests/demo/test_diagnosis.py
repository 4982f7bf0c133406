"""The diagnosis, on polls recorded from a real run of the demo (``data/record.py``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.demo.comparison import DemoRun, ScanOutcome, render_comparison
from milonga.demo.figures import diagnose
from milonga.demo.report import render_diagnosis
from milonga.monitor import Poll, Reply
from milonga.monitor.figures import stream_of_topic
from milonga.monitor.stats import duration

HW = "dserver/MyServer/hw"
TOP = "dserver/MyServer/top"
POSITION = "foo/bar/hw/position.change"
MODE = "foo/bar/hw/mode.change"


def text(lines: list[str]) -> str:
    """Rendered lines as one paragraph, so that wrapping does not matter."""
    return " ".join(" ".join(lines).split())


def test_the_slow_stream_is_found_from_processing_time_and_push_gaps(
    plain_polls: list[Poll],
) -> None:
    diagnosis = diagnose(plain_polls)

    assert [stream.name for stream in diagnosis.slow_streams] == [POSITION]
    (position,) = diagnosis.slow_streams
    assert position.publisher == HW
    assert position.subscriber == TOP
    assert position.processing is not None
    assert position.push_gaps is not None
    assert position.processing.median > 2 * position.push_gaps.median


def test_the_consumer_handled_fewer_events_per_second_than_were_pushed(
    plain_polls: list[Poll],
) -> None:
    diagnosis = diagnose(plain_polls)
    pushed = diagnosis.publisher(HW)
    handled = diagnosis.consumer(TOP)

    assert pushed is not None
    assert handled is not None
    assert pushed.rate is not None
    assert handled.rate is not None
    # A 300 ms handler against 10 Hz pushes.
    assert handled.rate < pushed.rate / 2


def test_the_latency_grew_far_beyond_the_gap_between_pushes(plain_polls: list[Poll]) -> None:
    diagnosis = diagnose(plain_polls)
    consumer = diagnosis.consumer(TOP)
    (position,) = diagnosis.slow_streams

    assert consumer is not None
    assert consumer.latency is not None
    assert position.push_gaps is not None
    assert consumer.latency.maximum > 10 * position.push_gaps.median


def test_every_event_arrived_in_the_end(plain_polls: list[Poll]) -> None:
    diagnosis = diagnose(plain_polls)

    assert {stream.name for stream in diagnosis.streams} == {POSITION, MODE}
    assert all(stream.pushed > 0 for stream in diagnosis.streams)
    assert diagnosis.missed == 0
    assert diagnosis.behind == 0
    assert "they were late, not lost" in text(render_diagnosis(diagnosis))


def test_events_still_in_flight_midway_are_not_called_missed(plain_polls: list[Poll]) -> None:
    busiest = max(range(1, len(plain_polls)), key=lambda i: diagnose(plain_polls[: i + 1]).behind)
    midway = diagnose(plain_polls[: busiest + 1])

    assert midway.behind > 0
    assert midway.missed == 0
    assert f"none was missed, but {midway.behind} had not arrived yet" in text(
        render_diagnosis(midway)
    )


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

    diagnosis = diagnose(polls)

    assert diagnosis.missed == 3
    assert "3 were lost on the way (missed events)" in text(render_diagnosis(diagnosis))


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

    figures, recorded = diagnose(polls), diagnose(plain_polls)

    # The recorded run started fresh processes, whose first samples have no gap at all.
    assert figures.publisher(HW) == recorded.publisher(HW)
    assert figures.consumer(TOP) == recorded.consumer(TOP)
    assert [s.push_gaps for s in figures.streams] == [s.push_gaps for s in recorded.streams]


def test_later_first_samples_of_a_poll_keep_their_gaps(plain_polls: list[Poll]) -> None:
    later = first_sampled(plain_polls) + 1
    polls = list(plain_polls)
    polls[later] = with_first_gaps(polls[later], SAMPLING_OFF_MICROS)

    figures = diagnose(polls)
    pushed, handled = figures.publisher(HW), figures.consumer(TOP)

    assert pushed is not None
    assert pushed.gaps is not None
    assert handled is not None
    assert handled.gaps is not None
    assert pushed.gaps.maximum == handled.gaps.maximum == SAMPLING_OFF_MICROS


def test_the_diagnosis_names_cause_rates_latency_and_counts(plain_polls: list[Poll]) -> None:
    rendered = text(render_diagnosis(diagnose(plain_polls)))

    assert f"Diagnosis, from the {len(plain_polls)} snapshots" in rendered
    assert f"Cause: {POSITION} takes" in rendered
    assert f"per event in {TOP}, longer than the" in rendered
    assert f"between two events pushed by {HW}" in rendered
    assert f"Rates: {HW} pushed" in rendered
    assert "every stream waits behind the slow one" in rendered
    assert f"Latency: events reached their first callback in {TOP} up to" in rendered
    assert f"{POSITION} " in rendered
    assert "0 missed" in rendered


def test_with_the_scheduler_the_consumer_keeps_up(fixed_polls: list[Poll]) -> None:
    diagnosis = diagnose(fixed_polls)
    pushed = diagnosis.publisher(HW)
    handled = diagnosis.consumer(TOP)

    assert diagnosis.slow_streams == ()
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
    assert "late" not in rendered


def test_the_comparison_shows_both_runs_side_by_side(
    plain_polls: list[Poll], fixed_polls: list[Poll]
) -> None:
    before = DemoRun(ScanOutcome(30.5, "Timeout waiting for Mode.IDLE"), diagnose(plain_polls))
    after = DemoRun(ScanOutcome(13.1), diagnose(fixed_polls))

    lines = render_comparison(before, after, ("as it is", "with the scheduler"))

    assert lines[0].split() == ["as", "it", "is", "with", "the", "scheduler"]
    rows = {line.split("  ")[2].strip(): line for line in lines[1:]}
    assert "failed after 30.5 s" in rows["Scan()"]
    assert rows["Scan()"].endswith("returned after 13.1 s")
    assert f"{POSITION}: handling one event (median)" in rows
    assert rows[f"{TOP}: events handled"].endswith("events/s")
    assert f"{TOP}: highest latency" in rows
    assert rows["missed events"].split()[-2:] == ["0", "0"]
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

    diagnosis = diagnose(silent)

    assert diagnosis.streams == ()
    assert diagnosis.publisher(HW) is None
    assert "Cause: no stream has both push and processing samples" in text(
        render_diagnosis(diagnosis)
    )


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
