"""The report's figures: a `Timeline` drawn as PNG images, with matplotlib.

Each figure is a `matplotlib.figure.Figure` drawn on its own Agg canvas: no pyplot, so
no global state, nothing to close and nothing shared between threads.  Series longer
than an axes is wide in pixels are first reduced to their min/max `envelope`, so a
figure costs the same to draw and to store whatever the length of the recording.  Times
are shown in the recording's own UTC offset (`Timeline.tz`).  Pure code, no Tango.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


def _usable(directory: Path) -> bool:
    """Whether ``directory`` is, or could be made, a directory this process may write
    to: matplotlib's own test of its configuration and cache directories."""
    try:
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):
        return False
    return os.access(directory, os.W_OK) and directory.is_dir()


def settle_configuration_directory() -> None:
    """Give matplotlib a writable directory before it is imported, so that it does not
    print warnings about its own or rebuild its font cache in a new one each run.

    Nothing to do if ``MPLCONFIGDIR`` is set, off Linux and FreeBSD, or if matplotlib's
    defaults (``matplotlib`` under ``XDG_CONFIG_HOME`` and ``XDG_CACHE_HOME``, or
    ``~/.config`` and ``~/.cache``) are usable.  Otherwise ``MPLCONFIGDIR`` is set to
    ``milonga/matplotlib`` in that cache directory if it is usable, or else to a new
    temporary directory removed when the process exits."""
    if os.environ.get("MPLCONFIGDIR") or not sys.platform.startswith(("linux", "freebsd")):
        return
    bases: list[Path | None] = []
    for variable, default in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache")):
        try:
            bases.append(Path(os.environ.get(variable) or Path.home() / default))
        except RuntimeError:  # no home directory
            bases.append(None)
    config, cache = bases
    if config and cache and _usable(config / "matplotlib") and _usable(cache / "matplotlib"):
        return
    ours = cache / "milonga" / "matplotlib" if cache else None
    if ours is None or not _usable(ours):
        try:
            ours = Path(tempfile.mkdtemp(prefix="milonga-matplotlib-"))
        except OSError:
            return  # matplotlib says what it needs, in its own error
        atexit.register(shutil.rmtree, ours, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = str(ours)


settle_configuration_directory()

# matplotlib reads its configuration directory when it is imported: after the above.
import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from milonga.monitor.figures import sample_attribute  # noqa: E402
from milonga.monitor.findings import Severity  # noqa: E402
from milonga.monitor.stats import time_unit  # noqa: E402
from milonga.report.timeline import (  # noqa: E402
    Episode,
    Series,
    ServerTimeline,
    Timeline,
    envelope,
)

DPI = 80
"""Pixels per inch of every figure: small files, text still sharp on screen."""
WIDTH = 11.0
"""Width of every figure, in inches."""
LEFT, RIGHT = 0.08, 0.70
"""Where the axes start and end, as fractions of the width; legends go to the right."""
LABELS = 0.40
"""Where the findings figure's axes start: its row names are on the left."""
FINDINGS_RIGHT = 0.97
"""Where the findings figure's axes end: its legend is above them, not beside."""
LABEL_CHARACTERS = 64
"""The most characters of a findings figure's row name: longer subjects are shortened
in the middle, so that the row keeps its kind and the end of its subject."""
PANEL_HEIGHT = 1.6
"""Height of one stacked axes of a server figure, in inches."""
LEGEND_LINE = 0.14
"""Height of one line of a legend, in inches."""
STRIP_HEIGHT = 0.45
"""Height of a server figure's findings strip, in inches."""
ROW_HEIGHT = 0.24
"""Height of one row of the findings figure, in inches."""
MAX_STREAMS = 6
"""The most streams (or attributes) one axes draws."""
MAX_ROWS = 40
"""The most rows (kind and subject) the findings figure draws."""

SEVERITY_COLOURS = {
    Severity.INFO: "#4c78a8",
    Severity.WARNING: "#f58518",
    Severity.ERROR: "#d62728",
}
"""The colour of each severity, in every figure and on the page."""
SERIES_COLOURS = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
"""The colours of a figure's streams, in the order they are first drawn."""
SILENT_COLOUR = "#999999"
RESTART_COLOUR = "#6a3d9a"

_EPOCH = float(mdates.date2num(datetime.fromtimestamp(0, timezone.utc)))  # type: ignore[no-untyped-call]
"""POSIX time 0 as a matplotlib date number (days since matplotlib's epoch)."""


@dataclass(frozen=True)
class Picture:
    """One figure as a PNG image, with the words that stand for it."""

    png: bytes
    alt: str
    """What the figure shows, for readers that do not see it."""
    width: int
    height: int
    """Size in pixels."""


@dataclass(frozen=True)
class Drawn:
    """A figure and what it left out."""

    picture: Picture
    left_out: tuple[str, ...] = ()
    """One sentence (without its full stop) for each part that drew only some of what
    it could have drawn."""


@dataclass
class _Line:
    """One series to draw in an axes."""

    label: str
    series: Series
    key: str
    """What picks the colour: the stream or attribute."""
    style: str = "-"


@dataclass
class _Panel:
    """One axes of a server figure."""

    title: str
    unit: str
    lines: list[_Line] = field(default_factory=list)
    scale: float = 1.0
    """Values are multiplied by it (seconds shown in ms, say)."""
    left_out: int = 0
    """Streams or attributes not drawn."""


def findings_figure(timeline: Timeline) -> Drawn | None:
    """The episodes of ``timeline`` as bars, one row per kind and subject, coloured by
    severity; None if there is no episode."""
    if not timeline.episodes or timeline.start is None or timeline.end is None:
        return None
    rows: dict[tuple[str, str], list[Episode]] = {}
    for episode in sorted(timeline.episodes, key=_episode_order):
        rows.setdefault((episode.kind, str(episode.subject)), []).append(episode)
    shown = list(rows.items())[:MAX_ROWS]
    height = 1.1 + ROW_HEIGHT * len(shown)
    figure = Figure(figsize=(WIDTH, height), dpi=DPI)
    axes = figure.add_axes((LABELS, 0.6 / height, FINDINGS_RIGHT - LABELS, 1 - 0.9 / height))
    for row, (_, episodes) in enumerate(shown):
        _bars(axes, timeline, episodes, (row - 0.35, 0.7))
    axes.set_yticks(range(len(shown)), [row_label(kind, subject) for (kind, subject), _ in shown])
    axes.set_ylim(len(shown) - 0.5, -0.5)
    axes.tick_params(axis="y", labelsize=7)
    _time_axis(axes, timeline, label=True)
    for severity, colour in SEVERITY_COLOURS.items():
        axes.plot([], [], color=colour, linewidth=6, label=severity.label)
    axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, fontsize=7, frameon=False)
    more = len(rows) - len(shown)
    alt = (
        f"Findings against time: {len(timeline.episodes)} episodes of "
        f"{len(rows)} findings, coloured by severity" + (f"; {more} rows not drawn" if more else "")
    )
    left_out = (f"{more} more findings not drawn, the least severe; the table lists them",)
    return Drawn(_picture(figure, alt), left_out if more else ())


def row_label(kind: str, subject: str) -> str:
    """``kind  subject``, the name of a findings figure's row, in `LABEL_CHARACTERS` at
    most: a longer subject loses characters from its middle (marked ``…``), keeping a
    third of what fits from its start and the rest from its end; the kind is kept
    whole, and at least 12 characters of the subject."""
    label = f"{kind}  {subject}"
    if len(label) <= LABEL_CHARACTERS:
        return label
    room = max(LABEL_CHARACTERS - len(kind) - 3, 12)
    head = room // 3
    return f"{kind}  {subject[:head]}…{subject[len(subject) - (room - head) :]}"


def server_figure(timeline: Timeline, server: ServerTimeline) -> Drawn:
    """The figure of ``server``: its findings as a coloured strip over stacked axes that
    share the time axis, one per quantity that has data, with the polls it did not
    answer shaded and its restarts marked."""
    episodes = [episode for episode in timeline.episodes if episode.subject.server == server.admin]
    flagged = {episode.subject.stream for episode in episodes if episode.subject.stream}
    panels = [panel for panel in _panels(server, flagged) if panel.lines]
    if not panels:
        why = "it never answered" if not server.answers else "it had no event streams"
        panels = [_Panel(f"nothing to draw: {why}", "")]
    ratios = [STRIP_HEIGHT] + [_panel_height(panel) for panel in panels]
    height = 0.9 + sum(ratios)
    figure = Figure(figsize=(WIDTH, height), dpi=DPI)
    grid = figure.add_gridspec(
        len(ratios),
        1,
        height_ratios=ratios,
        left=LEFT,
        right=RIGHT,
        top=1 - 0.25 / height,
        bottom=0.6 / height,
        hspace=0.25,
    )
    strip = figure.add_subplot(grid[0])
    _strip(strip, timeline, episodes)
    colours = _Palette()
    for number, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(grid[number], sharex=strip)
        _draw_panel(axes, panel, colours, timeline, server)
        _time_axis(axes, timeline, label=number == len(panels))
    left_out = tuple(
        f"{panel.title}: {panel.left_out} more {'stream' if panel.left_out == 1 else 'streams'} "
        "not drawn"
        for panel in panels
        if panel.left_out
    )
    alt = (
        f"{server.admin} against time ({_offset_name(timeline)}): "
        + ", ".join(panel.title for panel in panels)
        + (f"; {len(server.silent)} periods without an answer shaded" if server.silent else "")
        + (f"; {len(server.restarts)} restarts marked" if server.restarts else "")
    )
    return Drawn(_picture(figure, alt), left_out)


def _panel_height(panel: _Panel) -> float:
    """Inches for ``panel``: `PANEL_HEIGHT`, or more if its legend needs it."""
    return max(PANEL_HEIGHT, 0.3 + LEGEND_LINE * len(panel.lines))


class _Palette:
    """The colour of each stream of a figure, the next of `SERIES_COLOURS` for each new
    one; an attribute's timings get the colour of its stream when that came first."""

    def __init__(self) -> None:
        self._colours: dict[str, str] = {}
        self._used = 0

    def of(self, key: str) -> str:
        """The colour of stream (or attribute, or other line) ``key``."""
        colour = self._colours.get(key)
        if colour is None:
            colour = self._colours[key] = SERIES_COLOURS[self._used % len(SERIES_COLOURS)]
            self._used += 1
            if "/" in key:  # a stream
                self._colours.setdefault(sample_attribute(key), colour)
        return colour


def _panels(server: ServerTimeline, flagged: set[str]) -> list[_Panel]:
    """The axes ``server`` could have, each with the streams it draws."""
    attributes = {sample_attribute(stream) for stream in flagged}  # timings' keys
    counters = _Panel("event counters", "events")
    _add(
        counters,
        flagged,
        [("pushed", server.pushed, "-")],
        [("received", server.received, "-"), ("pushed by publisher", server.publisher_pushed, ":")],
    )
    backlog = _Panel("backlog (pushed, not yet received)", "events")
    _add(backlog, flagged, [("backlog", server.backlog, "-")])
    rates = _Panel("event rates", "events/s")
    _add(
        rates,
        flagged,
        [("pushed", server.push_rate, "-")],
        [("processed", server.received_rate, "-")],
    )
    latency = _Panel("latency", "s")
    _add(
        latency,
        attributes,
        [("median", server.latency_median, "-"), ("max", server.latency_max, ":")],
    )
    processing = _Panel("callback processing", "s")
    _add(
        processing,
        attributes,
        [("median", server.processing_median, "-"), ("max", server.processing_max, ":")],
    )
    gaps = _Panel("gaps between events (median)", "s")
    for label, series in (
        ("pushed", server.push_gap_median),
        ("received", server.event_gap_median),
    ):
        if _has_data(series):
            gaps.lines.append(_Line(label, series, label))
    losses = _Panel("missed, discarded, callbacks", "count")
    _add(
        losses,
        flagged,
        [
            ("missed", server.missed, "-"),
            ("discarded", server.discarded, "--"),
            ("callbacks", server.callbacks, ":"),
        ],
    )
    waiting = _Panel("subscriptions not connected", "count")
    if _peak(server.not_connected) > 0:
        waiting.lines.append(_Line("not connected", server.not_connected, "not connected"))
    for panel in (latency, processing, gaps):
        _in_seconds(panel)
    return [counters, backlog, rates, latency, processing, gaps, losses, waiting]


_Kind = tuple[str, Mapping[str, Series], str]
"""A label, the series of each stream or attribute, and a line style."""


def _add(panel: _Panel, flagged: Collection[str], *sides: Sequence[_Kind]) -> None:
    """Add to ``panel`` the series of its `relevant` streams (or attributes), up to
    `MAX_STREAMS` in all, shared in turn between ``sides`` (one list of kinds for each:
    the streams a server publishes, those it subscribes to), so that neither crowds
    out the other: the first of each side, then the second of each, and so on."""
    labelled = sum(len(kinds) for kinds in sides) > 1
    rankings = [relevant(_peaks(kinds), flagged) for kinds in sides]
    chosen = _in_turn(rankings, MAX_STREAMS)
    panel.left_out = sum(map(len, rankings)) - sum(map(len, chosen))
    for kinds, names in zip(sides, chosen, strict=True):
        for name in names:
            for label, by_name, style in kinds:
                found = by_name.get(name)
                if found is not None and _has_data(found):
                    text = f"{label} {name}" if labelled else name
                    panel.lines.append(_Line(text, found, name, style))


def _peaks(kinds: Sequence[_Kind]) -> dict[str, float]:
    """The greatest value of each stream (or attribute) that has data in ``kinds``."""
    peaks: dict[str, float] = {}
    for _, by_name, _ in kinds:
        for name, series in by_name.items():
            if _has_data(series):
                peaks[name] = max(peaks.get(name, 0.0), _peak(series))
    return peaks


def _in_turn(rankings: Sequence[Sequence[str]], limit: int) -> list[list[str]]:
    """The first names of each of ``rankings``, ``limit`` in all, taken in turn: the
    first of each ranking, then the second of each, and so on."""
    chosen: list[list[str]] = [[] for _ in rankings]
    taken = 0
    for depth in range(max(map(len, rankings), default=0)):
        for ranking, names in zip(rankings, chosen, strict=True):
            if depth < len(ranking) and taken < limit:
                names.append(ranking[depth])
                taken += 1
    return chosen


def relevant(peaks: Mapping[str, float], flagged: Collection[str]) -> list[str]:
    """The names of ``peaks`` (stream or attribute -> greatest value), most relevant
    first: those in ``flagged`` (with findings), then the others, each group most
    active (greatest peak) first, then by name."""
    return sorted(peaks, key=lambda name: (name not in flagged, -peaks[name], name))


def _in_seconds(panel: _Panel) -> None:
    """Show ``panel``'s seconds in the unit of its largest value (s, ms or μs)."""
    peak = max((_peak(line.series) for line in panel.lines), default=0.0)
    unit, micros = time_unit(peak * 1e6)
    panel.unit = unit
    panel.scale = 1e6 / micros


def _draw_panel(
    axes: Axes,
    panel: _Panel,
    colours: _Palette,
    timeline: Timeline,
    server: ServerTimeline,
) -> None:
    """Draw ``panel`` in ``axes``, with ``server``'s silent spans and restarts."""
    pixels = _pixels(axes)
    low, high = np.inf, -np.inf
    for line in panel.lines:
        colour = colours.of(line.key)
        times, values = envelope(line.series.times, line.series.values, pixels)
        shown = np.asarray(values, dtype=float) * panel.scale
        finite = shown[np.isfinite(shown)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        axes.plot(
            _dates(times),
            shown,
            linestyle=line.style,
            linewidth=1.2,
            color=colour,
            label=line.label,
            # Points a line may not join (a lone answer between silences) stay visible.
            marker="." if len(times) <= pixels // 8 else None,
            markersize=3,
        )
    _marks(axes, server, timeline)
    if low <= high:
        _value_axis(axes, low, high)
    axes.set_ylabel(panel.unit, fontsize=8)
    # A title at a given height: matplotlib no longer lays out the axes' ticks and
    # labels a second time to keep it clear of them (none are on top), which cost 4 to
    # 18% of a figure; the title stands where it stood, to the pixel.
    axes.set_title(panel.title, fontsize=8, loc="left", pad=2, y=1.0)
    axes.tick_params(labelsize=7)
    axes.grid(True, linewidth=0.3, alpha=0.5)
    if panel.lines:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _value_axis(axes: Axes, low: float, high: float) -> None:
    """Show from 0 (or ``low``, if below) to ``high`` (or 0, if above) on ``axes``' y
    axis, with 5% room beyond a limit that is not 0, in plain numbers: no offset and no
    power of ten over the axes.  A small change of a large value then looks as small as
    it is, not like a swing across the whole axes."""
    bottom, top = min(low, 0.0), max(high, 0.0)
    if top == bottom:
        top = bottom + 1.0
    room = (top - bottom) * 0.05
    axes.set_ylim(bottom - room if bottom < 0 else bottom, top + room if top > 0 else top)
    axes.ticklabel_format(axis="y", style="plain", useOffset=False)


def _marks(axes: Axes, server: ServerTimeline, timeline: Timeline) -> None:
    """Shade where ``server`` did not answer and mark where it restarted."""
    half = _half_poll(timeline)
    for span in server.silent:
        # From the first poll it missed to the one it answered again, or at least a poll.
        start, end = (
            (span.start, span.end)
            if span.end > span.start
            else (span.start - half, span.end + half)
        )
        axes.axvspan(_date(start), _date(end), color=SILENT_COLOUR, alpha=0.3, linewidth=0)
    for time in server.restarts:
        axes.axvline(_date(time), color=RESTART_COLOUR, linestyle="--", linewidth=1)


def _strip(axes: Axes, timeline: Timeline, episodes: Sequence[Episode]) -> None:
    """The server's finding episodes as bars coloured by severity."""
    _bars(axes, timeline, sorted(episodes, key=lambda episode: episode.severity), (0, 1))
    axes.set_yticks([])
    axes.set_ylim(0, 1)
    axes.set_title(  # at a given height, as in `_draw_panel`
        "findings" if episodes else "findings: none", fontsize=8, loc="left", pad=2, y=1.0
    )
    _time_axis(axes, timeline, label=False)


def _bars(
    axes: Axes, timeline: Timeline, episodes: Iterable[Episode], rows: tuple[float, float]
) -> None:
    """Draw ``episodes`` as bars at height ``rows`` (bottom, height), in the colour of
    their severity, each widened by half a poll on both sides so that one poll shows;
    later ones over earlier ones."""
    half = _half_poll(timeline)
    for episode in episodes:
        width = (episode.end - episode.start + 2 * half) / 86400
        axes.broken_barh(
            [(_date(episode.start - half), width)], rows, color=SEVERITY_COLOURS[episode.severity]
        )


def _time_axis(axes: Axes, timeline: Timeline, *, label: bool) -> None:
    """Times of the recording's UTC offset on ``axes``' x axis, the date included where
    the figure spans days; the offset named under the bottom axes (``label``)."""
    tz = timeline.tz or timezone.utc
    locator = mdates.AutoDateLocator(tz=tz, minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=tz)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(formatter)
    if timeline.start is not None and timeline.end is not None:
        half = max(_half_poll(timeline), 0.5)
        first, last = sorted((timeline.start, timeline.end))  # forwards, whatever the clock did
        axes.set_xlim(_date(first - half), _date(last + half))
    axes.tick_params(axis="x", labelsize=7, labelbottom=label)
    if label:
        axes.set_xlabel(f"time ({_offset_name(timeline)})", fontsize=8)


def _offset_name(timeline: Timeline) -> str:
    """``UTC+01:00``: the offset of the times of ``timeline``, that of its first poll."""
    tz = timeline.tz or timezone.utc
    offset = datetime.fromtimestamp(timeline.start or 0, tz).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _half_poll(timeline: Timeline) -> float:
    """Half the poll period: how far a poll's mark reaches either side of it."""
    return (timeline.period or 0.0) / 2


def _pixels(axes: Axes) -> int:
    """How many pixels wide ``axes`` is: the most points a series needs there."""
    return max(1, round(axes.get_position().width * WIDTH * DPI))


def _date(time: float) -> float:
    """POSIX seconds as a matplotlib date number."""
    return float(_EPOCH + time / 86400)


def _dates(times: Sequence[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """POSIX seconds as matplotlib date numbers."""
    return np.asarray(times, dtype=np.float64) / 86400 + _EPOCH


def _has_data(series: Series) -> bool:
    return len(series) > 0 and bool(np.isfinite(np.asarray(series.values, dtype=float)).any())


def _peak(series: Series) -> float:
    """The greatest finite value of ``series`` (in absolute value); 0 if none."""
    values = np.abs(np.asarray(series.values, dtype=float))
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def _episode_order(episode: Episode) -> tuple[int, float]:
    return (-episode.severity, episode.start)


def _picture(figure: Figure, alt: str) -> Picture:
    """``figure`` drawn as a PNG."""
    canvas = FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    width, height = canvas.get_width_height()
    return Picture(buffer.getvalue(), alt, width, height)
