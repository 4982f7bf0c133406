"""The report's figures, drawn from recordings of real runs and from made-up timelines:
PNGs that decode, in the colours of what they show, with the streams that matter most."""

from __future__ import annotations

import io
import itertools
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from milonga.monitor.findings import Severity, Subject
from milonga.monitor.jsonl import RecordProblem
from milonga.report.build import read_timeline
from milonga.report.plots import (
    DPI,
    LABEL_CHARACTERS,
    MAX_ROWS,
    MAX_STREAMS,
    RESTART_COLOUR,
    SERIES_COLOURS,
    SEVERITY_COLOURS,
    WIDTH,
    Picture,
    _draw_panel,
    _Palette,
    _panels,
    _time_axis,
    findings_figure,
    relevant,
    row_label,
    server_figure,
)
from milonga.report.timeline import Episode, Series, ServerTimeline, Span, Timeline

DEMO = Path(__file__).parents[1] / "demo" / "data"
FINDINGS = Path(__file__).parents[1] / "monitor" / "data" / "findings"


def timeline_of(path: Path) -> Timeline:
    """The timeline of a checked-in recording, which reads without a problem."""

    def problem(found: RecordProblem) -> None:
        pytest.fail(found.message)

    return read_timeline(path, problem)


def pixels(picture: Picture) -> np.ndarray:
    """The RGB pixels of ``picture``, checking its size on the way."""
    image = Image.open(io.BytesIO(picture.png))
    assert image.format == "PNG"
    assert image.size == (picture.width, picture.height)
    return np.asarray(image.convert("RGB"))


def has_colour(picture: Picture, colour: str, *, at_least: int = 20) -> bool:
    """Whether ``picture`` has at least ``at_least`` pixels of about ``colour``."""
    return coloured(pixels(picture), colour) >= at_least


def coloured(rgb: np.ndarray, colour: str) -> int:
    """How many pixels of ``rgb`` are ``colour`` (``#rrggbb``), or nearly: lines are
    drawn antialiased, so only their middle has the colour exactly."""
    wanted = np.array([int(colour[index : index + 2], 16) for index in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - wanted).max(axis=-1) <= 24).sum())


def test_the_findings_figure_shows_each_finding_in_its_severity_colour() -> None:
    timeline = timeline_of(DEMO / "plain.jsonl")
    drawn = findings_figure(timeline)
    assert drawn is not None
    assert drawn.left_out == ()
    picture = drawn.picture
    assert has_colour(picture, SEVERITY_COLOURS[Severity.WARNING])
    assert not has_colour(picture, SEVERITY_COLOURS[Severity.ERROR], at_least=200)
    assert "findings" in picture.alt


def test_a_recording_without_findings_has_no_findings_figure() -> None:
    timeline = timeline_of(DEMO / "plain.jsonl")
    timeline.episodes.clear()
    assert findings_figure(timeline) is None


def test_the_findings_figure_draws_the_worst_rows_and_counts_the_rest() -> None:
    timeline = made_up_timeline(streams=1)
    start, end = timeline.start or 0.0, timeline.end or 0.0
    for index in range(MAX_ROWS + 5):
        severity = Severity.ERROR if index == MAX_ROWS + 4 else Severity.INFO
        subject = Subject("dserver/made/up", f"dev/ice/{index}/a.change")
        timeline.episodes.append(Episode("k", subject, severity, start, end, 2, "m", ongoing=False))
    drawn = findings_figure(timeline)
    assert drawn is not None
    assert drawn.left_out == ("5 more findings not drawn, the least severe; the table lists them",)
    assert has_colour(drawn.picture, SEVERITY_COLOURS[Severity.ERROR])  # the last, but worst


def test_a_server_figure_draws_its_series_and_findings() -> None:
    timeline = timeline_of(DEMO / "plain.jsonl")
    top = server_figure(timeline, timeline.servers["dserver/MyServer/top"])
    assert top.picture.width == round(WIDTH * DPI)
    assert has_colour(top.picture, SERIES_COLOURS[0], at_least=200)
    assert has_colour(top.picture, SEVERITY_COLOURS[Severity.WARNING], at_least=200)
    for quantity in ("event counters", "backlog", "event rates", "latency", "processing"):
        assert quantity in top.picture.alt
    assert top.left_out == ()


def test_a_restart_is_marked_and_silence_shaded() -> None:
    timeline = timeline_of(FINDINGS / "server-restarted.jsonl")
    (server,) = timeline.servers.values()
    assert server.restarts
    assert server.silent
    picture = server_figure(timeline, server).picture
    assert has_colour(picture, RESTART_COLOUR)
    assert has_colour(picture, SEVERITY_COLOURS[Severity.ERROR], at_least=200)
    assert "restarts marked" in picture.alt
    assert "without an answer shaded" in picture.alt


def test_a_server_that_never_answered_still_gets_a_figure() -> None:
    timeline = made_up_timeline(streams=0)
    server = timeline.servers["dserver/made/up"]
    server.answers = 0
    server.silent.append(Span(timeline.start or 0.0, timeline.end or 0.0))
    picture = server_figure(timeline, server).picture
    assert "never answered" in picture.alt
    pixels(picture)


def test_many_streams_draw_the_flagged_and_most_active_and_count_the_rest() -> None:
    streams = MAX_STREAMS + 3
    timeline = made_up_timeline(streams=streams)
    quiet = "dev/ice/0/attr0.change"  # the least active stream, with a finding
    timeline.episodes.append(
        Episode(
            "missed-events",
            Subject("dserver/made/up", quiet),
            Severity.ERROR,
            timeline.start or 0,
            timeline.end or 0,
            2,
            "lost",
            ongoing=True,
        )
    )
    figure = server_figure(timeline, timeline.servers["dserver/made/up"])
    assert figure.left_out == (
        "event counters: 3 more streams not drawn",
        "event rates: 3 more streams not drawn",
    )


@given(
    st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 1e6), max_size=20),
    st.sets(st.text(min_size=1, max_size=5), max_size=5),
)
def test_relevant_streams_come_flagged_first_then_most_active(
    peaks: dict[str, float], flagged: set[str]
) -> None:
    ranked = relevant(peaks, flagged)
    assert sorted(ranked) == sorted(peaks)
    marks = [name in flagged for name in ranked]
    assert marks == sorted(marks, reverse=True)  # all flagged ones before the others
    for before, after in itertools.pairwise(ranked):
        if (before in flagged) == (after in flagged):
            assert peaks[before] >= peaks[after]


def test_times_are_shown_in_the_recordings_offset() -> None:
    timeline = made_up_timeline(streams=1)
    picture = server_figure(timeline, timeline.servers["dserver/made/up"]).picture
    assert picture.alt.startswith("dserver/made/up against time (UTC+01:00): ")


def test_a_long_series_is_drawn_from_its_envelope() -> None:
    """A day of polls every second draws as a figure of the usual size."""
    timeline = made_up_timeline(streams=1, polls=86_400)
    picture = server_figure(timeline, timeline.servers["dserver/made/up"]).picture
    assert has_colour(picture, SERIES_COLOURS[0], at_least=200)
    assert len(picture.png) < 300_000


def made_up_timeline(*, streams: int, polls: int = 20) -> Timeline:
    """A publisher of ``streams`` streams, stream ``i`` pushing ``i + 1`` events a poll,
    polled every second for ``polls`` polls from 2026-12-05 23:59:50 UTC+01:00."""
    timeline = Timeline()
    start = 1_796_511_590.0
    timeline.start, timeline.end = start, start + polls - 1
    timeline.tz = timezone(timedelta(hours=1))
    timeline.polls = polls
    server = ServerTimeline("dserver/made/up", polls=polls, answers=polls)
    for index in range(streams):
        name = f"dev/ice/{index}/attr{index}.change"
        pushed, rate = Series(), Series()
        for poll in range(polls):
            pushed.append(start + poll, (index + 1) * poll + (poll % 7))
            rate.append(start + poll, index + 1 + (poll % 5))
        server.pushed[name], server.push_rate[name] = pushed, rate
    timeline.servers[server.admin] = server
    return timeline


def test_long_finding_names_are_not_cut_at_the_left_edge() -> None:
    """With a fully qualified host in every subject, each row still shows its kind and
    the end of its subject, and nothing is drawn over the figure's left edge."""
    timeline = made_up_timeline(streams=1)
    start, end = timeline.start or 0.0, timeline.end or 0.0
    host = "tango-databaseds.control-room.some-facility.example.org:10000"
    for index, kind in enumerate(("slow-callback", "falling-behind", "missed-events")):
        subject = Subject(f"tango://{host}/dserver/BenchFindings/{index}", f"dev/ice/{index}/a")
        timeline.episodes.append(
            Episode(kind, subject, Severity.WARNING, start, end, 2, "m", False)
        )
    drawn = findings_figure(timeline)
    assert drawn is not None
    rgb = pixels(drawn.picture)
    assert (rgb[:, :4] == 255).all(), "a row name runs over the left edge"
    for index, kind in enumerate(("slow-callback", "falling-behind", "missed-events")):
        label = row_label(kind, str(timeline.episodes[index].subject))
        assert label.startswith(f"{kind}  ")
        assert label.endswith(f"dev/ice/{index}/a")
        assert len(label) <= LABEL_CHARACTERS


@given(st.text(min_size=1, max_size=40), st.text(max_size=300))
def test_a_row_label_keeps_the_kind_and_the_end_of_the_subject(kind: str, subject: str) -> None:
    label = row_label(kind, subject)
    assert label.startswith(f"{kind}  ")
    if len(f"{kind}  {subject}") <= LABEL_CHARACTERS:
        assert label == f"{kind}  {subject}"
    else:
        assert len(label) <= max(LABEL_CHARACTERS, len(kind) + 15)
        assert label.endswith(subject[-8:])


def test_an_axis_near_a_large_value_shows_plain_numbers_from_zero() -> None:
    """Latencies of 99.99 ms with 0.01 ms of noise: no offset over the axes, ticks in
    plain milliseconds, and zero in view so that the noise looks as small as it is."""
    timeline = made_up_timeline(streams=0)
    server = timeline.servers["dserver/made/up"]
    latency = Series()
    for poll in range(timeline.polls):
        latency.append((timeline.start or 0.0) + poll, 0.09999 + (poll % 3) * 1e-5)
    server.latency_median["dev/ice/0/attr0"] = latency
    (panel,) = [panel for panel in _panels(server, set()) if panel.lines]
    figure = Figure(figsize=(WIDTH, 2), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    _draw_panel(axes, panel, _Palette(), timeline, server)
    figure.canvas.draw()
    assert panel.unit == "ms"
    assert axes.yaxis.get_offset_text().get_text() == ""
    bottom, top = axes.get_ylim()
    assert bottom <= 0
    assert top > 99.99
    ticks = [float(text.get_text()) for text in axes.get_yticklabels() if text.get_text()]
    assert max(ticks) >= 50  # not the noise: it reads 0.0000 to 0.0100 with an offset


def test_a_server_that_publishes_and_subscribes_shows_both_sides() -> None:
    """Eight streams it publishes, three it subscribes to: the counters show all three
    subscriptions beside the busiest of its own streams."""
    timeline = made_up_timeline(streams=MAX_STREAMS + 2)
    server = timeline.servers["dserver/made/up"]
    start = timeline.start or 0.0
    for index in range(3):
        received = Series()
        for poll in range(timeline.polls):
            received.append(start + poll, poll)
        server.received[f"other/dev/{index}/x.change"] = received
    counters = _panels(server, set())[0]
    labels = [line.label for line in counters.lines]
    assert sum(label.startswith("received ") for label in labels) == 3
    assert sum(label.startswith("pushed ") for label in labels) == MAX_STREAMS - 3
    assert counters.left_out == 5


def test_time_runs_forwards_even_when_the_last_poll_is_before_the_first() -> None:
    """A clock set back: the time axis still runs from left to right."""
    timeline = made_up_timeline(streams=1)
    timeline.start, timeline.end = timeline.end, timeline.start
    figure = Figure(figsize=(WIDTH, 2), dpi=DPI)
    axes = figure.add_subplot()
    _time_axis(axes, timeline, label=True)
    left, right = axes.get_xlim()
    assert left < right
