"""Polls: each server compared with its own last answer, and the JSON Lines record."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.monitor import JsonLinesWriter, MonitoredServer, Poll, PollHistory, Reply, poll_record
from milonga.monitor.figures import interval_seconds, poll_figures
from milonga.monitor.loop import late_warning
from milonga.monitor.poll import Cadence
from tests.monitor.data import text

PUBLISHER = MonitoredServer("dserver/MonitorPub/1", ("test/monitor/counter",))
SUBSCRIBER = MonitoredServer("dserver/MonitorSub/1", ("test/monitor/relay",))
START = datetime(2026, 3, 17, 12, 0, 0)
NOT_EXPORTED = (
    "API_DeviceNotExported: Device dserver/monitorpub/1 is not exported\n"
    "API_CommandFailed: Failed to execute command_inout on device dserver/monitorpub/1"
)


def poll(second: int, *replies: Reply) -> Poll:
    return Poll(START + timedelta(seconds=second), replies)


def test_labels_name_the_devices_that_led_to_the_server() -> None:
    assert PUBLISHER.label == "dserver/MonitorPub/1 (from test/monitor/counter)"
    two = MonitoredServer("dserver/MyServer/top", ("foo/bar/top", "foo/bar/top2"))
    assert two.label == "dserver/MyServer/top (from foo/bar/top, foo/bar/top2)"
    assert MonitoredServer("dserver/MyServer/top").label == "dserver/MyServer/top"


def test_each_server_is_compared_with_its_own_previous_answer() -> None:
    history = PollHistory()
    first = history.add(
        poll(
            0,
            Reply.answered(PUBLISHER, text("publisher_1.json")),
            Reply.answered(SUBSCRIBER, text("subscriber_1.json")),
        )
    )
    second = history.add(
        poll(
            10,
            Reply.answered(PUBLISHER, text("publisher_2.json")),
            Reply.answered(SUBSCRIBER, text("subscriber_2.json")),
        )
    )

    assert [e.server for e in first.entries] == [PUBLISHER, SUBSCRIBER]
    assert first.entries[0].report is not None
    assert len(first.entries[0].report.new_publishers) == 1
    assert second.entries[0].report is not None
    assert second.entries[0].report.published[0].counter.delta == 120
    assert second.entries[1].report is not None
    assert second.entries[1].report.subscription_changes[0].event_count is not None


def test_a_silent_server_is_compared_with_its_last_answer_when_it_returns() -> None:
    history = PollHistory()
    history.add(poll(0, Reply.answered(PUBLISHER, text("publisher_2.json"))))
    silent = [history.add(poll(s, Reply.failed(PUBLISHER, NOT_EXPORTED))) for s in (10, 20)]
    back = history.add(poll(30, Reply.answered(PUBLISHER, text("publisher_3.json"))))

    assert [r.entries[0].error for r in silent] == [NOT_EXPORTED, NOT_EXPORTED]
    assert all(r.entries[0].report is None for r in silent)
    (entry,) = back.entries
    assert (entry.silent_polls, entry.last_answer) == (2, START.astimezone())
    assert entry.report is not None
    assert entry.report.published[0].counter.delta == -115
    assert entry.report.went_down


def test_a_poll_time_without_a_utc_offset_is_local_time_so_report_times_compare() -> None:
    """Polls with and without a UTC offset in one history: every report time gets one."""
    history = PollHistory()
    naive = history.add(poll(0, Reply.answered(PUBLISHER, text("publisher_1.json"))))
    later = START.astimezone() + timedelta(seconds=10)
    aware = history.add(Poll(later, (Reply.answered(PUBLISHER, text("publisher_2.json")),)))

    (entry,) = aware.entries
    assert naive.time == START.astimezone()
    assert (aware.time, aware.time.tzinfo) == (later, later.tzinfo)  # kept as it was
    assert entry.last_answer == START.astimezone()
    assert interval_seconds(aware.time, entry.last_answer) == 10.0
    assert poll_figures(aware).polls == 1


def test_a_server_silent_from_the_start_has_everything_new_when_it_answers() -> None:
    history = PollHistory()
    history.add(poll(0, Reply.failed(PUBLISHER, NOT_EXPORTED)))
    (entry,) = history.add(poll(10, Reply.answered(PUBLISHER, text("publisher_1.json")))).entries

    assert (entry.silent_polls, entry.last_answer) == (1, None)
    assert entry.report is not None
    assert entry.report.new_publishers


def test_an_unreadable_reply_is_an_error_that_keeps_the_data() -> None:
    reply = Reply.answered(PUBLISHER, '{"version": 9}')

    assert reply.snapshot is None
    assert reply.data == {"version": 9}
    assert reply.error is not None
    assert "version 9" in reply.error
    assert Reply.answered(PUBLISHER, "<html>").data is None


def test_the_record_holds_the_servers_objects_or_errors() -> None:
    record = json.loads(
        poll_record(
            poll(
                0,
                Reply.answered(PUBLISHER, text("publisher_1.json")),
                Reply.failed(SUBSCRIBER, NOT_EXPORTED),
            )
        )
    )

    assert record == {
        "time": "2026-03-17T12:00:00",
        "replies": {
            "dserver/MonitorPub/1": {
                "data": json.loads(text("publisher_1.json")),
                "devices": ["test/monitor/counter"],
            },
            "dserver/MonitorSub/1": {"error": NOT_EXPORTED, "devices": ["test/monitor/relay"]},
        },
        "findings": [],
    }


@given(st.text())
def test_the_record_is_one_line_of_json_whatever_the_error_says(error: str) -> None:
    line = poll_record(poll(0, Reply.failed(PUBLISHER, error)))

    assert "\n" not in line
    assert json.loads(line)["replies"][PUBLISHER.admin]["error"] == (error or "no reply")


def test_the_writer_replaces_or_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "polls.jsonl"
    one = poll(0, Reply.answered(PUBLISHER, text("publisher_1.json")))
    two = poll(10, Reply.failed(PUBLISHER, NOT_EXPORTED))

    with JsonLinesWriter(path) as writer:
        writer.write(one)
        assert path.read_text() == poll_record(one) + "\n"  # there before close
    with JsonLinesWriter(path, append=True) as writer:
        writer.write(two)
    assert path.read_text().splitlines() == [poll_record(one), poll_record(two)]
    with JsonLinesWriter(path) as writer:
        writer.write(two)
    assert path.read_text().splitlines() == [poll_record(two)]


def test_polls_keep_to_the_period_and_a_late_one_moves_to_the_next_point() -> None:
    cadence = Cadence(period=10.0, start=100.0)

    assert cadence.next(now=100.5) == (9.5, 0.0)  # the first poll took 0.5 s
    assert cadence.next(now=110.0) == (10.0, 0.0)  # the second, taken at 110, none
    assert cadence.next(now=145.0) == (5.0, 20.0)  # the third took 25 s: 130, 140 missed
    assert cadence.next(now=151.0) == (9.0, 0.0)  # back on time at 160


periods = st.floats(min_value=0.1, max_value=86400.0)
durations = st.lists(st.floats(min_value=0.0, max_value=1000.0), min_size=1, max_size=20)


@given(periods, st.floats(min_value=0.0, max_value=1e6), durations)
def test_every_poll_is_taken_on_the_grid_and_late_only_after_an_overrun(
    period: float, start: float, took: list[float]
) -> None:
    cadence = Cadence(period, start)
    taken = start  # when the poll under way was taken
    for seconds in took:
        ended = taken + seconds
        wait, late = cadence.next(ended)
        due = taken + period
        taken = ended + wait
        points = (taken - start) / period
        assert wait >= 0.0
        assert abs(points - round(points)) < 1e-6 * max(1.0, points)  # on the grid
        assert abs(cadence.due - taken) <= 1e-6 * max(1.0, taken)
        assert late >= 0.0
        assert abs(taken - late - due) <= 1e-6 * max(1.0, taken)  # late is how much later
        if late:
            assert ended > due - 1e-6 * max(1.0, ended)  # only after an overrun
            assert taken - period <= ended + 1e-6 * max(1.0, ended)  # the next point after it


def test_a_late_snapshot_says_how_long_it_took_to_the_millisecond() -> None:
    text = late_warning("2026-11-21T02:11:01", took=1.0004, period=1.0, late=1.0)

    assert text == (
        "the snapshot of 2026-11-21T02:11:01 took 1.001 s, longer than the 1 s polling "
        "period: the next one is 1 s late"
    )
    assert "took 0.25 s, longer than the 0.2 s" in late_warning("T", 0.25, 0.2, 0.2)


def shown_seconds(text: str, before: str, after: str) -> float:
    return float(text.split(before, 1)[1].split(after, 1)[0])


@given(periods, st.floats(min_value=1e-12, max_value=1e5), st.integers(1, 1000))
def test_a_late_snapshot_never_reads_as_taking_the_period(
    period: float, overrun: float, missed: int
) -> None:
    took = period + overrun
    text = late_warning("T", took, period, missed * period)

    shown_took = shown_seconds(text, " took ", " s, ")
    shown_period = shown_seconds(text, "longer than the ", " s polling")
    assert shown_took > shown_period
    assert shown_took == pytest.approx(took, abs=1.5e-3 + 1e-9 * took)
    assert shown_period == pytest.approx(period, abs=5e-4 + 1e-9 * period)
    assert shown_seconds(text, "next one is ", " s late") == pytest.approx(
        missed * period, abs=5e-4 + 1e-9 * missed * period
    )
