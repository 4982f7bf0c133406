"""The report page, written from recordings of real runs: what its summary says, one
section per server, the findings with their messages, figures that are real pictures,
nothing loaded from elsewhere, user data escaped, and bad input reported, not fatal."""

from __future__ import annotations

import base64
import gc
import io
import os
import re
import shutil
import stat
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from milonga import __version__
from milonga.monitor.findings import Severity
from milonga.monitor.jsonl import iter_polls
from milonga.report import OutputError, RecordingError, build, plots, write_report
from milonga.report.build import read_timeline
from milonga.report.page import PROBLEMS_LISTED, PageFacts, render_page, span_text
from milonga.report.plots import SERIES_COLOURS, SEVERITY_COLOURS, Drawn
from milonga.report.timeline import ServerTimeline, Timeline
from tests.report.test_plots import coloured

DEMO = Path(__file__).parents[1] / "demo" / "data"
FINDINGS = Path(__file__).parents[1] / "monitor" / "data" / "findings"


class Page(HTMLParser):
    """What a test looks at in a page: its tags' attributes, ids and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def words(self) -> str:
        """The page's text, as a reader sees it (entities decoded), in one line."""
        return " ".join(" ".join(self.text).split())


def section(text: str, anchor: str) -> str:
    """The words of the page's section ``anchor``."""
    start = text.index(f'<section id="{anchor}">')
    return Page(text[start : text.index("</section>", start)]).words


def report(recording: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The page of ``recording`` and the warnings it gave."""
    warnings: list[str] = []
    output = tmp_path / "report.html"
    written = write_report(recording, output, warn=warnings.append)
    assert written.path == output
    text = output.read_text(encoding="utf-8")
    assert written.size == len(text.encode())
    return text, warnings


def images(page: Page) -> list[np.ndarray]:
    """The page's images, decoded, as RGB pixels."""
    decoded = []
    for attrs in page.all("img"):
        source = attrs["src"] or ""
        assert source.startswith("data:image/png;base64,")
        assert attrs["alt"]
        image = Image.open(io.BytesIO(base64.b64decode(source.partition(",")[2])))
        assert (image.width, image.height) == (int(attrs["width"] or 0), int(attrs["height"] or 0))
        decoded.append(np.asarray(image.convert("RGB")))
    return decoded


def test_the_demo_report_sums_up_the_run_and_names_the_slow_callback(tmp_path: Path) -> None:
    text, warnings = report(DEMO / "plain.jsonl", tmp_path)
    assert warnings == []
    page = Page(text)
    polls = list(iter_polls(DEMO / "plain.jsonl"))
    first, last = polls[0].time, polls[-1].time
    words = page.words
    clock = [time.isoformat(sep=" ", timespec="seconds") for time in (first, last)]
    assert f"{clock[0]} → {clock[1]}" in words
    assert "Polls 10, one every 5.00 s (median)" in words
    assert "Servers 2" in words
    summary = section(text, "summary")
    summary = summary[summary.index("Worst findings") :]
    assert "warning slow-callback dserver/MyServer/top: foo/bar/hw/position.change" in summary
    assert "no perf samples" not in words
    # One section per server, linked from the summary.
    sections = [attrs["id"] for attrs in page.all("section")]
    assert sections == ["summary", "findings", "server-1", "server-2"]
    links = {attrs["href"] for attrs in page.all("a")}
    assert {"#server-1", "#server-2", "#findings", "#summary"} <= links
    for admin in ("dserver/MyServer/hw", "dserver/MyServer/top"):
        assert f"{admin} publisher" in words or f"{admin} subscriber" in words
    # Every finding with its message.
    findings = section(text, "findings")
    episodes = read_timeline(DEMO / "plain.jsonl", lambda problem: pytest.fail(problem.message))
    assert episodes.episodes
    for episode in episodes.episodes:
        assert f"{episode.kind} {episode.subject}" in findings
        assert " ".join(episode.message.split()) in findings


def test_the_pictures_are_real_and_show_the_series(tmp_path: Path) -> None:
    text, _ = report(DEMO / "plain.jsonl", tmp_path)
    findings, *servers = images(Page(text))
    assert len(servers) == 2
    assert coloured(findings, SEVERITY_COLOURS[Severity.WARNING]) > 200
    for pixels in servers:
        assert coloured(pixels, SERIES_COLOURS[0]) > 200


def test_the_page_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    for recording in (DEMO / "plain.jsonl", FINDINGS / "missed-events.jsonl"):
        text, _ = report(recording, tmp_path)
        page = Page(text)
        assert not page.all("script")
        assert not page.all("link")
        for tag, attrs in page.tags:
            for name in ("src", "href"):
                value = attrs.get(name)
                if value is not None:
                    assert value.startswith(("data:image/png;base64,", "#")), (tag, value)
        assert "http:" not in text
        assert "https:" not in text
        assert "url(" not in text
        assert "@import" not in text


def test_the_fixed_demo_report_has_no_slow_callback(tmp_path: Path) -> None:
    text, _ = report(DEMO / "fixed.jsonl", tmp_path)
    assert "slow-callback" not in text
    assert "Servers 2" in Page(text).words


def test_restarts_and_silence_are_summed_up(tmp_path: Path) -> None:
    text, _ = report(FINDINGS / "server-restarted.jsonl", tmp_path)
    words = Page(text).words
    assert "server-restarted" in words
    assert "server-not-answering" in words
    assert re.search(r"restarted [1-9]\d* times?", words)
    assert "no perf samples" in words


def test_missed_events_are_reported_as_errors(tmp_path: Path) -> None:
    text, _ = report(FINDINGS / "missed-events.jsonl", tmp_path)
    words = Page(text).words
    assert "error missed-events" in words
    assert len(images(Page(text))) == 1 + 3  # the findings, then one per server


def test_names_from_the_recording_are_escaped(tmp_path: Path) -> None:
    evil = "dserver/<script>alert(1)</script>/hw&co"
    recording = tmp_path / "evil.jsonl"
    recording.write_text((DEMO / "plain.jsonl").read_text().replace("dserver/MyServer/hw", evil))
    text, _ = report(recording, tmp_path)
    assert "<script>" not in text
    assert "dserver/&lt;script&gt;alert(1)&lt;/script&gt;/hw&amp;co" in text
    assert evil in Page(text).words


def test_unreadable_lines_are_warned_about_and_the_rest_reported(tmp_path: Path) -> None:
    lines = (DEMO / "plain.jsonl").read_text().splitlines(keepends=True)
    recording = tmp_path / "damaged.jsonl"
    recording.write_text("".join([*lines[:3], "not a poll\n", *lines[3:9], lines[9][:200]]))
    text, warnings = report(recording, tmp_path)
    assert len(warnings) == 2
    assert "line 4: it is not JSON" in warnings[0]
    assert "line 11: the last line is cut off" in warnings[1]
    words = Page(text).words
    assert "Polls 9," in words
    assert "Reading problems" in words
    for warning in warnings:
        assert " ".join(warning.split()) in words


def test_another_versions_replies_are_warned_about_and_the_rest_reported(tmp_path: Path) -> None:
    lines = (DEMO / "plain.jsonl").read_text().splitlines(keepends=True)
    recording = tmp_path / "other.jsonl"
    recording.write_text(
        "".join(line.replace('"version": 1', '"version": 7', 1) for line in lines[:3])
        + "".join(lines[3:])
    )
    text, warnings = report(recording, tmp_path)
    assert "line 1: the reply of dserver/MyServer/hw is not QueryEventSystem data" in warnings[0]
    assert "in 2 more lines" in warnings[-1]
    words = Page(text).words
    assert "Polls 10," in words
    assert "7 of 10 polls" in words  # the server whose replies could not be read


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "holds no poll"), ("\n\n", "holds no poll"), ("garbage\n", "holds no poll")],
)
def test_a_recording_without_polls_is_refused(tmp_path: Path, content: str, expected: str) -> None:
    recording = tmp_path / "run.jsonl"
    recording.write_text(content)
    with pytest.raises(RecordingError, match=expected):
        write_report(recording, tmp_path / "run.html", warn=lambda message: None)
    assert os.listdir(tmp_path) == ["run.jsonl"]


def test_the_recording_itself_is_never_overwritten(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    shutil.copy(DEMO / "plain.jsonl", recording)
    with pytest.raises(RecordingError, match="would overwrite the recording"):
        write_report(recording, tmp_path / "." / "run.jsonl", warn=pytest.fail)
    assert recording.read_bytes() == (DEMO / "plain.jsonl").read_bytes()


def test_an_interrupted_write_leaves_the_old_report_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "run.html"
    output.write_text("the report of before")

    def interrupted(source: object, target: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(DEMO / "plain.jsonl", output, warn=pytest.fail)
    assert os.listdir(tmp_path) == ["run.html"]
    assert output.read_text() == "the report of before"


def test_an_output_that_cannot_be_written_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"missing/run\.html"):
        write_report(DEMO / "plain.jsonl", tmp_path / "missing" / "run.html", warn=pytest.fail)
    with pytest.raises(OutputError, match="is a directory"):
        write_report(DEMO / "plain.jsonl", tmp_path, warn=pytest.fail)
    assert os.listdir(tmp_path) == []


def test_the_page_names_the_recording_the_time_and_the_version(tmp_path: Path) -> None:
    before = datetime.now().astimezone().replace(microsecond=0)
    text, _ = report(DEMO / "fixed.jsonl", tmp_path)
    words = Page(text).words
    assert f"Recording {DEMO / 'fixed.jsonl'}" in words
    assert f"by milonga {__version__}" in words
    generated = re.search(r"generated (\S+ \S+) by", words)
    assert generated is not None
    assert datetime.fromisoformat(generated.group(1)) >= before


def test_figures_drawn_in_worker_processes_are_those_drawn_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeline = read_timeline(DEMO / "plain.jsonl", lambda found: pytest.fail(found.message))
    before = children()  # the session's servers, say
    monkeypatch.setattr(build, "_cores", lambda: 1)
    here = build.draw_servers(timeline)
    monkeypatch.setattr(build, "_cores", lambda: 2)
    forked = build.draw_servers(timeline)
    assert list(forked) == list(here) == list(timeline.servers)
    assert forked == here
    assert children() == before


def test_a_figure_failing_in_a_worker_is_a_clear_error_and_stops_every_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeline = read_timeline(DEMO / "plain.jsonl", lambda found: pytest.fail(found.message))
    before = children()  # the session's servers, say
    failing = list(timeline.servers)[-1]

    def server_figure(timeline: Timeline, server: ServerTimeline) -> Drawn:
        if server.admin == failing:
            raise ValueError("no room for this figure")
        return plots.server_figure(timeline, server)

    monkeypatch.setattr(build, "server_figure", server_figure)
    monkeypatch.setattr(build, "_cores", lambda: 2)
    with pytest.raises(build.DrawingError) as raised:
        build.draw_servers(timeline)
    message = str(raised.value)
    assert message.startswith(f"drawing the figure of {failing} failed in a worker process")
    assert "ValueError: no room for this figure" in message
    assert children() == before


def test_a_worker_that_dies_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = read_timeline(DEMO / "plain.jsonl", lambda found: pytest.fail(found.message))
    before = children()  # the session's servers, say

    def server_figure(timeline: Timeline, server: ServerTimeline) -> Drawn:
        os._exit(3)

    monkeypatch.setattr(build, "server_figure", server_figure)
    monkeypatch.setattr(build, "_cores", lambda: 2)
    with pytest.raises(build.DrawingError, match=r"ended \(exit status 3\) without sending it"):
        build.draw_servers(timeline)
    assert children() == before


def test_reading_collects_garbage_seldom_and_restores_the_collector(tmp_path: Path) -> None:
    thresholds = gc.get_threshold()
    seen: list[tuple[tuple[int, int, int], int]] = []

    def problem(found: object) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    recording = tmp_path / "run.jsonl"
    recording.write_text("{oops\n" + (DEMO / "plain.jsonl").read_text())
    read_timeline(recording, problem)
    ((during, frozen),) = seen
    assert during[0] == build.GC_THRESHOLD
    assert frozen > 0
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0


def test_reading_leaves_what_its_caller_froze_frozen(tmp_path: Path) -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        read_timeline(DEMO / "plain.jsonl", lambda found: pytest.fail(found.message))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def children() -> set[int]:
    """The processes this one started and that are still running."""
    return {child.pid for child in psutil.Process().children() if child.is_running()}


def test_an_output_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match=r"pipe\.html: it is not a regular file"):
        write_report(DEMO / "plain.jsonl", fifo, warn=pytest.fail)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert os.listdir(tmp_path) == ["pipe.html"]


def test_an_output_that_is_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "night.html"
    target.write_text("the report of before")
    link = tmp_path / "latest.html"
    link.symlink_to(target)
    written = write_report(DEMO / "plain.jsonl", link, warn=pytest.fail)
    assert written.path == link
    assert link.is_symlink()
    assert "Tango event system report" in target.read_text()
    assert sorted(os.listdir(tmp_path / "reports")) == ["night.html"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "missing/run.html",
            r"cannot write the report to \S*missing/run\.html: the directory "
            r"\S*missing does not exist",
        ),
        (
            "/proc/version",
            r"cannot write the report to /proc/version: cannot create a file "
            r"in /proc \(",
        ),
    ],
)
def test_an_output_that_cannot_be_written_is_found_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, expected: str
) -> None:
    def read_timeline(*arguments: object) -> None:
        pytest.fail("the recording was read before the output was checked")

    monkeypatch.setattr(build, "read_timeline", read_timeline)
    with pytest.raises(OutputError, match=expected):
        write_report(DEMO / "plain.jsonl", tmp_path / output, warn=pytest.fail)
    assert os.listdir(tmp_path) == []


def test_the_page_lists_the_first_reading_problems_and_counts_the_rest(tmp_path: Path) -> None:
    """A poll, 30 lines of junk, the other polls, then all of them again (their times
    not later than those before): the page lists the first reading problems, the
    reader's count of the lines it did not tell, and how many more problems there were."""
    first, *others = (DEMO / "plain.jsonl").read_text().splitlines(keepends=True)
    junk = [f"junk {number}\n" for number in range(30)]
    recording = tmp_path / "junk.jsonl"
    recording.write_text("".join([first, *junk, *others, first, *others]))
    text, warnings = report(recording, tmp_path)
    problems = section(text, "summary")
    problems = problems[problems.index("Reading problems") :]
    listed = re.findall(r"line (\d+): it is not JSON", problems)
    assert listed == [str(number) for number in range(2, PROBLEMS_LISTED + 2)]
    assert "10 more lines could not be read either" in problems  # told by the reader
    more = len(warnings) - PROBLEMS_LISTED - 1
    assert more >= 10  # the polls that went back in time, at least
    assert f"... and {more} more problems not listed" in problems


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_duration_is_never_negative_nor_in_e_notation(seconds: float) -> None:
    text = span_text(seconds)
    assert not text.startswith("-")
    assert not re.search(r"\d[eE][+-]?\d", text)
    assert re.fullmatch(r"[0-9][0-9.]* (μs|ms|s)|\d+ h( \d+ min)?|\d+ min( \d+ s)?|unknown", text)


def test_a_clock_that_went_back_shows_no_negative_duration() -> None:
    """A timeline whose last poll is before its first, as when the clock was set back:
    the page shows no negative duration anywhere."""
    timeline = read_timeline(DEMO / "plain.jsonl", lambda problem: pytest.fail(problem.message))
    assert timeline.start is not None
    timeline.end = timeline.start - 3560.0
    first = timeline.episodes[0]
    timeline.episodes[0] = first._replace(end=first.start - 3600.0)
    facts = PageFacts("run.jsonl", datetime.now().astimezone(), __version__)
    words = Page(render_page(timeline, facts, None, {})).words
    assert not re.search(r"-\s*\d[\d.]*(e[+-]?\d+)? (μs|ms|s|min|h)\b", words)
    assert not re.search(r"\d[eE][+-]\d", words)
