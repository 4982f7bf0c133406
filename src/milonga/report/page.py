"""The report's HTML page: one self-contained file that opens offline.

The page has inline CSS, its figures as ``data:`` PNG images and nothing else: no
script, no font, no link to anywhere but its own sections.  Every text that comes from
the recording (server, stream and attribute names, messages, warnings) is escaped, as
it is user data.  Pure code, no Tango.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from milonga.monitor.findings import Severity
from milonga.monitor.stats import duration
from milonga.report.plots import SEVERITY_COLOURS, Drawn, Picture
from milonga.report.timeline import Episode, ServerTimeline, Timeline

WORST = 10
"""How many episodes the summary lists as the worst findings."""
PROBLEMS_LISTED = 20
"""How many reading problems the summary lists one by one, besides those about the whole
file; it counts the others."""

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 62em; padding: 0 1em;
  color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
.meta, .more, .note { color: #555; }
.note { background: #fff8e1; border-left: 4px solid #f5b800; padding: 0.4em 0.8em; }
.warnings li { color: #8a4b00; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left;
  vertical-align: top; }
th { background: #f3f3f3; white-space: nowrap; }
td.name { overflow-wrap: anywhere; min-width: 12em; }
td.message { overflow-wrap: anywhere; min-width: 16em; }
td.kind { white-space: nowrap; }
td.number { text-align: right; white-space: nowrap; }
.severity { font-weight: bold; white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
code { font-size: 0.95em; }
@media print { h2 { break-before: page; } img { break-inside: avoid; } }
"""


@dataclass(frozen=True)
class PageFacts:
    """What the page says about itself, beyond the timeline."""

    recording: str
    """The recording's file name, as the user gave it."""
    generated: datetime
    version: str
    """milonga's version."""
    warnings: Sequence[str] = ()
    """What could not be read in the recording, one message each: those the page lists
    (`milonga.report.build.write_report` gives the first `PROBLEMS_LISTED`, and those
    about the whole file)."""
    problems: int = 0
    """How many problems there were in all, listed or not; the page says how many it
    did not list if that is more than ``len(warnings)``."""


def render_page(
    timeline: Timeline,
    facts: PageFacts,
    findings: Drawn | None,
    servers: Mapping[str, Drawn],
) -> str:
    """The whole page: ``timeline`` summed up, its findings figure and ``servers``'
    figures by admin device."""
    anchors = {admin: f"server-{number}" for number, admin in enumerate(timeline.servers, 1)}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Event system report: {_text(facts.recording)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Tango event system report</h1>",
        f'<p class="meta">Recording <code>{_text(facts.recording)}</code>; generated '
        f"{_text(_clock(facts.generated.timestamp(), facts.generated.tzinfo))} by milonga "
        f"{_text(facts.version)}.</p>",
        *_summary(timeline, facts, anchors),
        *_findings_section(timeline, findings),
    ]
    for admin, server in timeline.servers.items():
        parts.extend(_server_section(timeline, server, anchors[admin], servers.get(admin)))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(timeline: Timeline, facts: PageFacts, anchors: Mapping[str, str]) -> list[str]:
    tz = timeline.tz
    parts = ['<section id="summary"><h2>Summary</h2>', "<table>"]
    if timeline.start is not None and timeline.end is not None:
        lasted = timeline.end - timeline.start
        how_long = span_text(lasted) if lasted >= 0 else "unknown: the clock went back"
        parts.append(
            f"<tr><th>Span</th><td>{_text(_clock(timeline.start, tz))} → "
            f"{_text(_clock(timeline.end, tz))} ({_text(how_long)})</td></tr>"
        )
    period = "unknown" if timeline.period is None else span_text(timeline.period)
    parts += [
        f"<tr><th>Polls</th><td>{timeline.polls}, one every {_text(period)} (median)</td></tr>",
        f"<tr><th>Servers</th><td>{len(timeline.servers)}</td></tr>",
        "</table>",
        "<h3>Servers</h3>",
        "<table><tr><th>Server</th><th>Answers</th><th>Restarts</th>"
        "<th>Without an answer</th><th>Worst finding</th></tr>",
    ]
    for admin, server in timeline.servers.items():
        worst = _worst(episode for episode in timeline.episodes if episode.subject.server == admin)
        parts.append(
            f'<tr><td class="name"><a href="#{anchors[admin]}">{_text(admin)}</a></td>'
            f'<td class="number">{server.answers}/{server.polls}</td>'
            f'<td class="number">{len(server.restarts)}</td>'
            f"<td>{_text(_silent_text(server))}</td>"
            f"<td>{_severity(worst[0].severity) + ' ' + _text(worst[0].kind) if worst else 'none'}"
            "</td></tr>"
        )
    parts.append("</table>")
    parts.append("<h3>Worst findings</h3>")
    worst = _worst(timeline.episodes)[:WORST]
    if worst:
        parts.extend(_episode_table(worst, tz))
        more = len(timeline.episodes) - len(worst)
        parts.append(
            '<p class="more"><a href="#findings">All findings against time</a>'
            + (f" ({more} more than listed here)" if more else "")
            + ".</p>"
        )
    else:
        parts.append("<p>No finding held at any poll.</p>")
    if facts.warnings:
        parts.append("<h3>Reading problems</h3>")
        parts.append(
            "<p>These parts of the recording could not be read; the report shows the rest.</p>"
        )
        parts.extend(_problems(facts))
    if not any(server.has_samples for server in timeline.servers.values()):
        parts.append(
            '<p class="note">This recording has no perf samples, so it shows no latency, '
            "processing time or event gaps: record with <code>tango-event-monitor --monitor "
            "-o FILE</code> to get them.</p>"
        )
    parts.append("</section>")
    return parts


def _problems(facts: PageFacts) -> list[str]:
    """The reading problems of ``facts``, and how many more there were."""
    parts = ['<ul class="warnings">', *(f"<li>{_text(warning)}</li>" for warning in facts.warnings)]
    parts.append("</ul>")
    more = facts.problems - len(facts.warnings)
    if more > 0:
        parts.append(
            f'<p class="more">... and {more} more {"problem" if more == 1 else "problems"} '
            "not listed; the command printed them as warnings.</p>"
        )
    return parts


def _findings_section(timeline: Timeline, drawn: Drawn | None) -> list[str]:
    parts = ['<section id="findings"><h2>Findings</h2>']
    if drawn is None:
        parts.append("<p>No finding held at any poll.</p>")
    else:
        parts.extend(_figure(drawn))
        parts.extend(_episode_table(timeline.episodes, timeline.tz))
    parts.append("</section>")
    return parts


def _server_section(
    timeline: Timeline, server: ServerTimeline, anchor: str, drawn: Drawn | None
) -> list[str]:
    episodes = [episode for episode in timeline.episodes if episode.subject.server == server.admin]
    roles = [
        role
        for role, present in (
            ("publisher", server.is_publisher),
            ("subscriber", server.is_subscriber),
        )
        if present
    ]
    parts = [
        f'<section id="{anchor}"><h2>{_text(server.admin)}</h2>',
        f"<p>{_text(' and '.join(roles) or 'no events seen')}; answered "
        f"{server.answers} of {server.polls} polls; restarted {len(server.restarts)} "
        f"{'time' if len(server.restarts) == 1 else 'times'}; without an answer: "
        f"{_text(_silent_text(server))}.</p>",
    ]
    if drawn is not None:
        parts.extend(_figure(drawn))
    if episodes:
        parts.extend(_episode_table(episodes, timeline.tz))
    else:
        parts.append("<p>No finding about this server.</p>")
    parts.append('<p class="more"><a href="#summary">Back to the summary</a></p></section>')
    return parts


def _episode_table(episodes: Iterable[Episode], tz: tzinfo | None) -> list[str]:
    """A table of ``episodes``: severity, kind, subject, from, for how long, message."""
    parts = [
        "<table><tr><th>Severity</th><th>Finding</th><th>About</th><th>From</th>"
        "<th>For</th><th>Message</th></tr>"
    ]
    for episode in episodes:
        polls = f"{episode.polls} poll{'s' if episode.polls != 1 else ''}"
        ongoing = ", still at the end" if episode.ongoing else ""
        parts.append(
            f'<tr><td>{_severity(episode.severity)}</td><td class="kind">{_text(episode.kind)}</td>'
            f'<td class="name">{_text(str(episode.subject))}</td>'
            f"<td>{_text(_clock(episode.start, tz))}</td>"
            f"<td>{_text(span_text(episode.end - episode.start))} ({polls}{ongoing})</td>"
            f'<td class="message">{_text(episode.message)}</td></tr>'
        )
    parts.append("</table>")
    return parts


def _worst(episodes: Iterable[Episode]) -> list[Episode]:
    """``episodes``, worst first, then longest first, then earliest first."""
    return sorted(
        episodes,
        key=lambda episode: (-episode.severity, episode.start - episode.end, episode.start),
    )


def _silent_text(server: ServerTimeline) -> str:
    if not server.silent:
        return "never"
    total = sum(span.end - span.start for span in server.silent)
    spans = len(server.silent)
    return f"{spans} {'time' if spans == 1 else 'times'}, {span_text(total)} in all"


def span_text(seconds: float) -> str:
    """A duration for people: ``0 s``, ``450 ms``, ``4.50 s``, ``2 min 5 s``, ``3 h 20 min``;
    never negative and never in e-notation: a negative duration (a clock set back) is
    shown as ``0 s``, an infinite or not-a-number one as ``unknown``."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds <= 0:
        return "0 s"
    if seconds < 59.5:
        return duration(seconds * 1e6)
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def _clock(time: float, tz: tzinfo | None) -> str:
    """``time`` as a date and time of ``tz`` (UTC if None), to the second, with the offset."""
    return datetime.fromtimestamp(time, tz or timezone.utc).isoformat(sep=" ", timespec="seconds")


def _severity(severity: Severity) -> str:
    colour = SEVERITY_COLOURS[severity]
    return f'<span class="severity" style="color: {colour}">{severity.label}</span>'


def _figure(drawn: Drawn) -> list[str]:
    """The image of ``drawn``, then a line for each part of it that left things out."""
    return [
        _image(drawn.picture),
        *(f'<p class="more">{_text(line)}.</p>' for line in drawn.left_out),
    ]


def _image(picture: Picture) -> str:
    data = base64.b64encode(picture.png).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" alt="{_text(picture.alt)}" '
        f'width="{picture.width}" height="{picture.height}">'
    )


def _text(text: str) -> str:
    return html.escape(text, quote=True)
