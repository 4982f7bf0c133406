"""The report's data: `Timeline` from the checked-in recordings of real runs, and `Series`."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.monitor import Poll, PollReport, read_polls
from milonga.monitor.analysis import Analysis, PollUpdate
from milonga.monitor.findings import Finding, Findings, Severity, Subject
from milonga.report.timeline import Series, ServerTimeline, Timeline

DEMO = Path(__file__).parent.parent / "demo" / "data"
RECORDED = Path(__file__).parent.parent / "monitor" / "data" / "findings"
TOP = "dserver/MyServer/top"
POSITION = "foo/bar/hw/position.change"
WAIT_SECONDS = 60.0


def timeline_of(polls: Iterable[Poll]) -> Timeline:
    """The timeline of ``polls``, each given to `Analysis` then to the timeline, as the
    report reads a recording."""
    analysis, timeline = Analysis(), Timeline()
    for poll in polls:
        timeline.add(analysis.add(poll))
    timeline.finish()
    return timeline


def recorded(name: str) -> Timeline:
    return timeline_of(read_polls(RECORDED / f"{name}.jsonl"))


def server(timeline: Timeline, name: str) -> ServerTimeline:
    """The server whose admin device names ``name`` (``FindingsSlow``, ...)."""
    (found,) = (s for s in timeline.servers.values() if f"/{name}/" in s.admin + "/")
    return found


def known(series: Series) -> list[float]:
    return [value for value in series.values if not math.isnan(value)]


def rising_for(values: list[float], polls: int) -> bool:
    """Whether ``values`` rise strictly over ``polls`` consecutive values somewhere."""
    run = 1
    for before, after in itertools.pairwise(values):
        run = run + 1 if after > before else 1
        if run >= polls:
            return True
    return False


def test_the_plain_demo_shows_the_backlog_growing_and_a_slow_callback_on_its_stream() -> None:
    timeline = timeline_of(read_polls(DEMO / "plain.jsonl"))
    top = timeline.servers[TOP]
    backlog = known(top.backlog[POSITION])
    assert rising_for(backlog, 4), backlog
    assert max(backlog) > 50
    pushed, received = top.publisher_pushed[POSITION], top.received[POSITION]
    assert known(pushed)[-1] == known(received)[-1]  # caught up by the end
    slow = [e for e in timeline.episodes if e.kind == "slow-callback"]
    assert [e.subject for e in slow] == [Subject(TOP, POSITION)]
    assert slow[0].polls > 3
    assert not slow[0].ongoing
    assert POSITION in slow[0].message
    assert top.is_subscriber
    assert not top.is_publisher
    assert top.has_samples
    assert timeline.servers["dserver/MyServer/hw"].is_publisher


def test_the_fixed_demo_shows_no_backlog_and_no_episode() -> None:
    timeline = timeline_of(read_polls(DEMO / "fixed.jsonl"))
    assert timeline.episodes == []
    top = timeline.servers[TOP]
    assert set(known(top.backlog[POSITION])) == {0.0}
    assert all(not s.silent and not s.restarts for s in timeline.servers.values())


def test_the_whole_recording_has_its_span_period_and_utc_offset() -> None:
    polls = read_polls(DEMO / "plain.jsonl")
    timeline = timeline_of(polls)
    assert timeline.polls == len(polls) == 10
    first, last = (polls[i].time.astimezone().timestamp() for i in (0, -1))
    assert (timeline.start, timeline.end) == (first, last)
    assert timeline.period is not None
    assert 4.9 < timeline.period < 5.1
    assert timeline.tz is not None
    assert all(s.polls == s.answers == 10 for s in timeline.servers.values())


def test_a_restart_has_its_time_and_no_negative_rate() -> None:
    timeline = recorded("server-restarted")
    restarted = server(timeline, "FindingsRestart")
    episodes = [e.start for e in timeline.episodes if e.kind == "server-restarted"]
    assert restarted.restarts == episodes
    assert len(episodes) == 2
    (rate,) = restarted.push_rate.values()
    assert known(rate)
    assert min(known(rate)) >= 0
    at_restart = [v for t, v in zip(rate.times, rate.values, strict=True) if t in episodes]
    assert at_restart
    assert all(math.isnan(v) for v in at_restart)
    (pushed,) = restarted.pushed.values()
    values = known(pushed)
    assert any(after < before for before, after in itertools.pairwise(values))


def test_a_server_that_does_not_answer_has_a_silent_span_and_gaps_in_its_lines() -> None:
    polls = read_polls(RECORDED / "server-not-answering.jsonl")
    timeline = timeline_of(polls)
    (frozen,) = (s for s in timeline.servers.values() if s.answers < s.polls)
    times = [poll.time.astimezone().timestamp() for poll in polls]
    silent = [
        time
        for time, poll in zip(times, polls, strict=True)
        for reply in poll.replies
        if reply.server.admin == frozen.admin and reply.snapshot is None
    ]
    answered_again = min(time for time in times if time > silent[-1])
    assert [tuple(span) for span in frozen.silent] == [(silent[0], answered_again)]
    (episode,) = (e for e in timeline.episodes if e.kind == "server-not-answering")
    assert (episode.subject.server, episode.start, episode.severity) == (
        frozen.admin,
        silent[0],
        Severity.ERROR,
    )
    line = frozen.not_connected
    assert [math.isnan(v) for v in line.values].count(True) >= 1
    assert frozen.polls - frozen.answers == len(silent)


def test_a_server_still_silent_at_the_end_has_its_span_closed_at_the_last_poll() -> None:
    polls = read_polls(RECORDED / "server-not-answering.jsonl")
    cut = next(i for i, poll in enumerate(polls) if any(r.snapshot is None for r in poll.replies))
    timeline = timeline_of(polls[: cut + 2])
    (frozen,) = (s for s in timeline.servers.values() if s.silent)
    assert frozen.silent[0].end == timeline.end
    (episode,) = (e for e in timeline.episodes if e.kind == "server-not-answering")
    assert episode.ongoing
    assert episode.end == timeline.end
    assert episode.polls == 2


def test_missed_events_rise_on_the_slow_subscriber_only() -> None:
    timeline = recorded("missed-events")
    slow = server(timeline, "FindingsSlow")
    (missed,) = slow.missed.values()
    values = known(missed)
    assert values[0] == 0
    assert values[-1] > 0
    assert values == sorted(values)
    (fast,) = server(timeline, "FindingsFast").missed.values()
    assert set(known(fast)) == {0.0}
    (episode,) = (e for e in timeline.episodes if e.kind == "missed-events")
    assert episode.subject.server == slow.admin
    assert episode.severity is Severity.ERROR


def test_a_slow_callback_has_latency_and_processing_series_that_climb() -> None:
    timeline = recorded("slow-callback")
    slow, fast = server(timeline, "FindingsSlow"), server(timeline, "FindingsFast")
    assert slow.has_samples
    for group in ("latency_median", "latency_max", "processing_median", "processing_max"):
        assert set(getattr(slow, group)) == {"level"}, group
    latency = known(slow.latency_median["level"])
    assert rising_for(latency, 4), latency
    assert max(latency) > 5 * max(known(fast.latency_median["level"]))
    assert max(known(slow.processing_max["level"])) >= max(known(slow.processing_median["level"]))
    assert known(slow.event_gap_median)
    assert known(server(timeline, "FindingsPub").push_gap_median)


def test_an_episode_is_ongoing_until_it_clears() -> None:
    polls = read_polls(RECORDED / "slow-callback.jsonl")
    whole = timeline_of(polls)
    (episode,) = (e for e in whole.episodes if e.kind == "slow-callback")
    assert whole.end is not None
    assert not episode.ongoing
    assert episode.end < whole.end
    cut = timeline_of(polls[:6])
    (ongoing,) = (e for e in cut.episodes if e.kind == "slow-callback")
    assert ongoing.ongoing
    assert ongoing.end == cut.end
    assert ongoing.start == episode.start
    assert [e.start for e in whole.episodes] == sorted(e.start for e in whole.episodes)


def findings_at(second: int, *found: tuple[Severity, str]) -> PollUpdate:
    """A poll of no server at ``second`` whose findings are ``found`` (severity, message),
    all of one kind and subject."""
    time = datetime(2026, 12, 5, 12, 0, second, tzinfo=timezone.utc)
    subject = Subject("dserver/A/1", "a/b/c/x.change")
    active = tuple(
        Finding("slow-callback", severity, subject, message, {}) for severity, message in found
    )
    return PollUpdate(Poll(time, ()), PollReport(time, ()), Findings(time, active))


def test_an_episode_keeps_its_worst_severity_with_the_latest_message_at_it() -> None:
    timeline = Timeline()
    for update in (
        findings_at(0, (Severity.WARNING, "first")),
        findings_at(10, (Severity.ERROR, "worst")),
        findings_at(20, (Severity.ERROR, "worst again")),
        findings_at(30, (Severity.WARNING, "better")),
        findings_at(40),
        findings_at(50, (Severity.INFO, "back")),
    ):
        timeline.add(update)
    timeline.finish()
    first, second = timeline.episodes
    assert (first.severity, first.message, first.polls, first.ongoing) == (
        Severity.ERROR,
        "worst again",
        4,
        False,
    )
    # It held from 0 to 30 and no longer at 40: it lasted until 40.
    assert (first.end - first.start, second.start - first.start) == (40.0, 50.0)
    assert (second.severity, second.polls, second.ongoing) == (Severity.INFO, 1, True)
    assert timeline.period == 10.0
    assert timeline.polls == 6
    assert timeline.tz == timezone.utc


def test_a_stream_gone_from_an_answer_breaks_its_line() -> None:
    timeline = recorded("subscription-churn")
    churn = server(timeline, "FindingsChurn")
    (received,) = churn.received.values()
    assert any(math.isnan(v) for v in received.values)
    assert known(received)


def test_a_flat_stretch_is_kept_as_its_two_ends() -> None:
    series = Series()
    for time in range(100):
        series.append(float(time), 0.0)
    assert list(series.times) == [0.0, 99.0]
    assert list(series.values) == [0.0, 0.0]
    series.append(100.0, 1.0)
    for time in range(101, 200):
        series.append(float(time), math.nan)
    assert list(series.times) == [0.0, 99.0, 100.0, 101.0, 199.0]
    assert len(series) == 5
    assert [v for v in series.values if not math.isnan(v)] == [0.0, 0.0, 1.0]


def test_a_changing_series_keeps_every_point() -> None:
    series = Series()
    for time in range(10):
        series.append(float(time), float(time % 3))
    assert list(series.values) == [float(t % 3) for t in range(10)]


Point = tuple[float, float]


def reduced(points: Iterable[Point]) -> list[Point]:
    """What `Series` keeps of ``points``, worked out the plain way: a point whose value is
    the same as the two kept before it (NaN the same as NaN) moves the last one instead."""

    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    kept: list[Point] = []
    for time, value in points:
        if len(kept) > 1 and same(value, kept[-1][1]) and same(kept[-1][1], kept[-2][1]):
            kept[-1] = (time, value)
        else:
            kept.append((time, value))
    return kept


def points_of(series: Series) -> list[Point]:
    return list(zip(series.times, series.values, strict=True))


def same_points(got: list[Point], expected: list[Point]) -> bool:
    """Whether the two lists have the same points, NaN equal to NaN."""
    return len(got) == len(expected) and all(
        t == u and (v == w or (math.isnan(v) and math.isnan(w)))
        for (t, v), (u, w) in zip(got, expected, strict=True)
    )


@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, 1.0, -1.0, math.nan, 2.5]),
            st.integers(-3, 3),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=80,
    )
)
def test_a_series_keeps_what_the_plain_rule_keeps(values: list[float]) -> None:
    series = Series()
    for time, value in enumerate(values):
        series.append(float(time), value)
    expected = reduced((float(time), float(value)) for time, value in enumerate(values))
    assert same_points(points_of(series), expected)


def test_every_series_of_the_recordings_keeps_what_the_plain_rule_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The points appended to each series of the checked-in recordings, reduced the plain
    way, are the points the timeline keeps."""
    appended: dict[int, list[Point]] = {}
    append = Series.append

    def recording(self: Series, time: float, value: float) -> None:
        appended.setdefault(id(self), []).append((time, float(value)))
        append(self, time, value)

    monkeypatch.setattr(Series, "append", recording)
    recordings = [DEMO / "plain.jsonl", DEMO / "fixed.jsonl", *sorted(RECORDED.glob("*.jsonl"))]
    checked = 0
    for path in recordings:
        timeline = timeline_of(read_polls(path))
        for one in timeline.servers.values():
            for series in one._series():
                assert same_points(points_of(series), reduced(appended.get(id(series), [])))
                checked += 1
        appended.clear()
    assert checked > 100


def test_a_silent_span_lasts_as_long_as_its_episode() -> None:
    """One definition of a run of polls: from its first poll to the poll that ends it (the
    server answered again), so the summary's silent time and the episode's agree."""
    timeline = recorded("server-not-answering")
    (frozen,) = (s for s in timeline.servers.values() if s.silent)
    (episode,) = (e for e in timeline.episodes if e.kind == "server-not-answering")
    assert not episode.ongoing
    assert [tuple(span) for span in frozen.silent] == [(episode.start, episode.end)]
    assert episode.end - episode.start > 0


def moved(polls: list[Poll], first: int, last: int, seconds: float) -> list[Poll]:
    """``polls`` with those from ``first`` to ``last`` (0-based, inclusive) moved in time."""
    return [
        Poll(poll.time + timedelta(seconds=seconds), poll.replies) if first <= i <= last else poll
        for i, poll in enumerate(polls)
    ]


def forward_only(timeline: Timeline) -> bool:
    """Whether every series, span and episode of ``timeline`` goes forward in time."""
    series = [s for one in timeline.servers.values() for s in one._series()]
    spans = [span for one in timeline.servers.values() for span in one.silent]
    return (
        all(list(s.times) == sorted(s.times) for s in series)
        and all(span.end >= span.start for span in spans)
        and all(e.end >= e.start for e in timeline.episodes)
        and (timeline.period or 0) >= 0
    )


def test_polls_when_the_clock_was_set_back_are_left_out() -> None:
    """Lines 6 to 10 of the plain demo an hour earlier: only the five before are taken in."""
    polls = read_polls(DEMO / "plain.jsonl")
    timeline = timeline_of(moved(polls, 5, 9, -3600))
    assert timeline.polls == 5
    assert timeline.end == polls[4].time.timestamp()
    assert forward_only(timeline)


def test_one_wild_time_leaves_nothing_running_backwards() -> None:
    polls = read_polls(RECORDED / "server-not-answering.jsonl")
    wild = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=14)))
    middle = len(polls) // 2
    polls[middle] = Poll(wild, polls[middle].replies)
    timeline = timeline_of(polls)
    assert timeline.polls == middle + 1
    assert timeline.end == wild.timestamp()
    assert forward_only(timeline)


ORDER_OF = """\
import sys
from milonga.monitor import read_polls
from tests.report.test_timeline import timeline_of
timeline = timeline_of(read_polls(sys.argv[1]))
for one in timeline.servers.values():
    print(one.admin, [list(group) for group in one._groups()])
print([(e.kind, str(e.subject)) for e in timeline.episodes])
"""


def test_every_order_is_the_same_in_every_process() -> None:
    """Series are made in an order that does not hang on how strings hash in a process
    (PYTHONHASHSEED), so that two reports of one recording draw alike."""
    root = Path(__file__).parents[2]
    orders = {
        subprocess.run(
            [sys.executable, "-c", ORDER_OF, str(DEMO / "plain.jsonl")],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=True,
        ).stdout
        for seed in range(6)
    }
    assert len(orders) == 1, orders
