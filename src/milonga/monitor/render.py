"""Reports as text, in the layout of the tango-event-monitor tutorial.

A poll opens and closes with a 120-column ``=`` rule around its time; each server starts
with a ``-`` rule around its label (wider than 120 columns if the label needs it); then
come the sections that have content, each a ``- Title`` line with its entries indented
below, the server's findings last.  Pure code, no Tango.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable

from milonga.monitor.diff import Change, Report, SubscriptionChange
from milonga.monitor.findings import Cleared, Finding, Findings
from milonga.monitor.poll import PollReport, ServerEntry
from milonga.monitor.snapshot import Subscription, short_name
from milonga.monitor.stats import SAMPLE_LIMIT, Metric, PerfRow, PerfTable, time_unit

WIDTH = 120
MIN_FILL = 3
"""A rule keeps at least this many ``fill`` characters on each side of its text."""
INDENT = "    "
TABLE_COLUMNS = ("mean", "median", "count", "minimum", "maximum", "1%", "10%", "90%", "99%")
MIN_DECIMALS = 2
MIN_SIGNIFICANT_DIGITS = 3
"""Every number of a table shows `MIN_DECIMALS` decimals, or more where it needs them to
show `MIN_SIGNIFICANT_DIGITS` significant digits: a row in seconds (chosen by its mean)
shows a 100 ms median as 0.100, not 0.10."""
NO_ATTRIBUTE = "(no attribute)"
"""The name of the processing-time row of events that name no attribute."""
FULL_TABLE_NOTE = (
    f"(a process keeps only {SAMPLE_LIMIT} samples between queries: these are its last "
    f"{SAMPLE_LIMIT} events; a shorter --poll-period shows all)"
)
"""Shown under a table whose samples filled the process's buffer: older ones may be gone."""


def rule(text: str, fill: str) -> str:
    """``text`` centred in a line of ``fill``: `WIDTH` columns, or more for a long text, so
    that at least `MIN_FILL` ``fill`` characters stay on each side."""
    return text.center(max(WIDTH, len(text) + 2 * MIN_FILL), fill)


def render_poll(report: PollReport, findings: Findings | None = None) -> str:
    """A whole poll: the time rules around every server's entry, ending with a newline.
    Each entry ends with its server's part of ``findings``, if given."""
    stamp = rule(report.time.isoformat(), "=")
    lines = [stamp]
    for entry in report.entries:
        mine = None if findings is None else findings.of_server(entry.server.admin)
        lines.extend(render_entry(entry, mine))
    lines.append(stamp)
    return "\n".join(lines) + "\n"


def render_entry(entry: ServerEntry, findings: Findings | None = None) -> list[str]:
    """One server: its ``-`` rule, then why it did not answer or what changed, then its
    ``findings`` (those of this server only), if given.

    A server answering after silent polls "may have restarted" only if it had answered
    before (``entry.last_answer`` is set); otherwise this is its first answer.
    """
    lines = [rule(entry.server.label, "-")]
    if entry.error is not None:
        lines += _section("No answer", [entry.error.splitlines()[0] if entry.error else ""])
    if entry.silent_polls and entry.last_answer is not None:
        lines += _section(
            "Answering again",
            [
                f"no answer to {entry.silent_polls} snapshot(s), so it may have restarted; "
                f"changes are since {entry.last_answer.isoformat()}"
            ],
        )
    elif entry.silent_polls:
        lines += _section(
            "First answer",
            [f"no answer to the {entry.silent_polls} snapshot(s) before, so everything is new"],
        )
    if entry.report is not None:
        lines += render_report(entry.report)
    if findings is not None:
        lines += render_findings(findings)
    return lines


def render_findings(findings: Findings) -> list[str]:
    """The ``- Findings`` section: ``severity: kind: message`` for each active finding,
    then ``cleared: kind on stream (held for N snapshots since T)`` for each that no
    longer holds; each entry wrapped to `WIDTH` columns, its further lines indented once
    more.  Nothing when there is neither."""
    entries = [*map(_active, findings.active), *map(_cleared, findings.cleared)]
    body = [line for entry in entries for line in _wrapped(entry)]
    return ["- Findings", *body] if body else []


def _active(finding: Finding) -> str:
    return f"{finding.severity.label}: {finding.kind}: {finding.message}"


def _cleared(cleared: Cleared) -> str:
    finding = cleared.finding
    stream = "" if finding.subject.stream is None else f" on {finding.subject.stream}"
    snapshots = "snapshot" if cleared.polls == 1 else "snapshots"
    return (
        f"cleared: {finding.kind}{stream} (held for {cleared.polls} {snapshots} since "
        f"{cleared.since.isoformat()})"
    )


def _wrapped(entry: str) -> list[str]:
    """``entry`` as indented lines of at most `WIDTH` columns; a word longer than a line
    (a long device name) is kept whole, and words are never split at their hyphens."""
    return textwrap.wrap(
        entry,
        WIDTH,
        initial_indent=INDENT,
        subsequent_indent=2 * INDENT,
        break_long_words=False,
        break_on_hyphens=False,
    )


def render_report(report: Report) -> list[str]:
    """The sections of one process's report that have content, as lines."""
    lines: list[str] = []
    lines += _section(
        "Counters went down (restarted, or dropped and subscribed again)",
        [short_name(name) for name in report.went_down],
    )
    lines += _section(
        "New publishers",
        [
            f"{short_name(p.stream)}: {p.counter} is the last pushed server counter"
            for p in report.new_publishers
        ],
    )
    lines += _section(
        "Published events",
        [
            f"{short_name(c.stream)}: {_moved(c.counter)} last pushed server counter"
            for c in report.published
        ],
    )
    lines += _section("Removed publishers", [short_name(s) for s in report.removed_publishers])
    lines += _table_section("Server performance", report.server_perf)
    lines += _section(
        "New subscriptions", [line for s in report.new_subscriptions for line in _new(s)]
    )
    lines += _section(
        "Received events and callback changes",
        [line for c in report.subscription_changes for line in _changed(c)],
    )
    lines += _section(
        "Removed subscriptions", [short_name(t) for t in report.removed_subscriptions]
    )
    lines += _section(
        "Waiting to connect",
        [f"{e.stream}: last attempt at {e.last_heartbeat}" for e in report.not_connected],
    )
    lines += _section("No longer waiting to connect", [e.stream for e in report.connected_again])
    lines += _table_section("Client performance", report.client_perf)
    return lines


def render_table(table: PerfTable) -> list[str]:
    """A performance table: a header, then one aligned row per statistic shown: those of
    the whole process, and the processing time of each attribute (not the latency of each
    attribute, which the findings use)."""
    shown = [row for row in table.rows if row_label(row) is not None]
    rows = [("", *TABLE_COLUMNS)] + [_cells(row) for row in shown]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (
            INDENT
            + "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        ).rstrip()
        for row in rows
    ]


def _section(title: str, entries: Iterable[str]) -> list[str]:
    body = [INDENT + entry for entry in entries]
    return [f"- {title}", *body] if body else []


def _table_section(title: str, table: PerfTable | None) -> list[str]:
    """The table under its title, and a note when its samples filled the process's buffer."""
    if table is None or not table.rows:
        return []
    note = [INDENT + FULL_TABLE_NOTE] if table.full else []
    return [f"- {title}", *render_table(table), *note]


def _moved(change: Change) -> str:
    return f"{change.before} -> {change.after} ({change.delta:+})"


def _continued(name: str, facts: list[str]) -> list[str]:
    """``name: first`` then ``: next`` lines with their colons under the first one's."""
    pad = " " * len(name)
    return [f"{name if i == 0 else pad}: {fact}" for i, fact in enumerate(facts)]


def _new(subscription: Subscription) -> list[str]:
    facts = [
        f"{subscription.event_count} events already processed",
        f"{subscription.server_counter} is the last received server counter",
        f"{subscription.callback_count} callback(s) registered",
        f"{subscription.missed_event_count} missed events detected",
        f"{subscription.discarded_event_count} events discarded",
    ]
    if subscription.last_resubscribed is not None:
        facts.append(f"last resubscribed at {subscription.last_resubscribed}")
    return _continued(short_name(subscription.topic), facts)


def _changed(change: SubscriptionChange) -> list[str]:
    counted = [
        (change.event_count, "events processed"),
        (change.server_counter, "last received server counter"),
        (change.callback_count, "callbacks"),
        (change.missed_event_count, "missed events detected"),
        (change.discarded_event_count, "events discarded"),
    ]
    facts = [f"{_moved(moved)} {what}" for moved, what in counted if moved is not None]
    if change.last_resubscribed is not None:
        before, after = change.last_resubscribed
        facts.append(f"{before or 'never'} -> {after or 'never'} last resubscribed")
    return _continued(short_name(change.topic), facts)


def table_number(value: float) -> str:
    """``value`` as a table shows it: see `MIN_SIGNIFICANT_DIGITS`."""
    decimals = MIN_DECIMALS
    if value != 0:
        leading = math.floor(math.log10(abs(value)))  # 0.0123 -> -2
        decimals = max(MIN_DECIMALS, MIN_SIGNIFICANT_DIGITS - 1 - leading)
    return f"{value:.{decimals}f}"


def row_label(row: PerfRow) -> str | None:
    """The name of ``row`` in a table, without its unit: the metric's, prefixed by the
    attribute for processing times (`NO_ATTRIBUTE` for events that name none); None for
    the other rows of one attribute, which tables do not show."""
    if row.attribute is None:
        return row.metric.value
    if row.metric is Metric.PROCESSING_TIME:
        return f"{row.attribute or NO_ATTRIBUTE} {row.metric.value}"
    return None


def _cells(row: PerfRow) -> tuple[str, ...]:
    stats = row.statistics
    label, size = row_label(row) or row.metric.value, 1.0
    if row.in_micros:
        unit, size = time_unit(stats.mean)
        label = f"{label} [{unit}]"

    def number(value: float | None) -> str:
        return "" if value is None else table_number(value / size)

    return (
        label,
        f"{number(stats.mean)}±{number(stats.standard_error)}",
        number(stats.median),
        str(stats.count),
        number(stats.minimum),
        number(stats.maximum),
        number(stats.p1),
        number(stats.p10),
        number(stats.p90),
        number(stats.p99),
    )
