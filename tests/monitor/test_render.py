"""Rendering: the tutorial's layout, exactly, for small constructed cases."""

# The expected output has the tutorial's 120-column rules.
# ruff: noqa: E501

from __future__ import annotations

import textwrap
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.monitor import (
    Change,
    ClientPerfSample,
    MonitoredServer,
    PerfRow,
    PerfTable,
    PollReport,
    Publisher,
    PublisherChange,
    Report,
    ServerEntry,
    Snapshot,
    Statistics,
    Subscription,
    SubscriptionChange,
    diff,
    render_poll,
    render_report,
)
from milonga.monitor.findings import Cleared, Finding, Findings, Severity, Subject
from milonga.monitor.render import (
    FULL_TABLE_NOTE,
    MIN_FILL,
    NO_ATTRIBUTE,
    WIDTH,
    render_table,
    rule,
)
from milonga.monitor.stats import SAMPLE_LIMIT, Metric, summarise, summarise_client_perf, time_unit
from tests.monitor.data import snapshot
from tests.monitor.strategies import snapshots

HW = MonitoredServer("dserver/MyServer/hw", ("foo/bar/hw",))
TOP = MonitoredServer("dserver/MyServer/top", ("foo/bar/top",))
PREFIX = "tango://tango-databaseds:10000/"


def subscription(attr: str, events: int, discarded: int) -> Subscription:
    return Subscription(
        topic=f"{PREFIX}foo/bar/hw/{attr}.idl5_change",
        channel=f"{PREFIX}dserver/myserver/hw",
        callback_count=1,
        server_counter=events,
        event_count=events,
        missed_event_count=0,
        discarded_event_count=discarded,
        last_resubscribed=None,
    )


def stats(  # noqa: PLR0917 - the table's columns, in order
    count: int,
    mean: float,
    error: float,
    median: float,
    low: float,
    high: float,
    deciles: tuple[float, float] | None = None,
) -> Statistics:
    p10, p90 = deciles or (None, None)
    return Statistics(count, mean, error, median, low, high, None, p10, p90, None)


def test_a_first_snapshot_lists_new_publishers_and_subscriptions() -> None:
    report = PollReport(
        datetime(2026, 3, 13, 16, 35, 33, 678998),
        (
            ServerEntry(
                HW,
                Report(
                    new_publishers=(
                        Publisher(f"{PREFIX}foo/bar/hw/mode.change", 2),
                        Publisher(f"{PREFIX}foo/bar/hw/position.change", 128),
                    )
                ),
            ),
            ServerEntry(
                TOP,
                Report(
                    new_subscriptions=(
                        subscription("mode", 2, 1),
                        subscription("position", 128, 0),
                    )
                ),
            ),
        ),
    )

    assert render_poll(report) == textwrap.dedent(
        """\
        ===============================================2026-03-13T16:35:33.678998===============================================
        -----------------------------------------dserver/MyServer/hw (from foo/bar/hw)------------------------------------------
        - New publishers
            foo/bar/hw/mode.change: 2 is the last pushed server counter
            foo/bar/hw/position.change: 128 is the last pushed server counter
        ----------------------------------------dserver/MyServer/top (from foo/bar/top)-----------------------------------------
        - New subscriptions
            foo/bar/hw/mode.idl5_change: 2 events already processed
                                       : 2 is the last received server counter
                                       : 1 callback(s) registered
                                       : 0 missed events detected
                                       : 1 events discarded
            foo/bar/hw/position.idl5_change: 128 events already processed
                                           : 128 is the last received server counter
                                           : 1 callback(s) registered
                                           : 0 missed events detected
                                           : 0 events discarded
        ===============================================2026-03-13T16:35:33.678998===============================================
        """
    )


def test_a_quiet_snapshot_shows_only_the_rules() -> None:
    report = PollReport(
        datetime(2026, 3, 13, 16, 35, 43, 689001),
        (ServerEntry(HW, Report()), ServerEntry(TOP, Report())),
    )

    lines = render_poll(report).splitlines()

    assert len(lines) == 4
    assert all(len(line) == WIDTH for line in lines)
    assert lines[1].strip("-") == HW.label


PERF_REPORT = PollReport(
    datetime(2026, 3, 17, 12, 42, 21, 916829),
    (
        ServerEntry(
            HW,
            Report(
                published=(
                    PublisherChange(f"{PREFIX}foo/bar/hw/mode.change", Change(4, 5)),
                    PublisherChange(f"{PREFIX}foo/bar/hw/position.change", Change(256, 315)),
                ),
                server_perf=PerfTable(
                    (
                        PerfRow(
                            Metric.EVENT_GAPS,
                            stats(60, 764690, 660260, 100410, 50, 40048410, (100200, 101080)),
                        ),
                        PerfRow(Metric.PUSH_TIME, stats(60, 47.17, 2.48, 40, 4, 116, (30, 65))),
                    ),
                    samples=60,
                ),
            ),
        ),
        ServerEntry(
            TOP,
            Report(
                subscription_changes=(
                    SubscriptionChange(
                        f"{PREFIX}foo/bar/hw/mode.idl5_change",
                        event_count=Change(4, 5),
                        server_counter=Change(4, 5),
                        callback_count=Change(1, 2),
                    ),
                    SubscriptionChange(
                        f"{PREFIX}foo/bar/hw/position.idl5_change",
                        event_count=Change(256, 276),
                        server_counter=Change(256, 276),
                    ),
                ),
                client_perf=PerfTable(
                    (
                        PerfRow(
                            Metric.EVENT_GAPS,
                            stats(20, 991470, 688670, 300910, 130, 14413120, (300420, 301520)),
                        ),
                        PerfRow(
                            Metric.SLEEP_TIME,
                            stats(20, 720680, 702400, 20, 10, 14412920, (10, 120)),
                        ),
                        PerfRow(
                            Metric.LATENCY,
                            stats(20, 1.71e6, 0.25e6, 1.70e6, 0, 3.61e6, (0.02e6, 3.39e6)),
                        ),
                        PerfRow(Metric.CALLBACKS, stats(20, 1.05, 0.05, 1, 1, 2, (1, 1))),
                        PerfRow(Metric.WAKE_COUNT, stats(20, 1.40, 0.39, 1, 1, 9, (1, 1))),
                        PerfRow(
                            Metric.PROCESSING_TIME,
                            stats(1, 127, 0, 127, 127, 127),
                            attribute="mode",
                        ),
                        PerfRow(
                            Metric.PROCESSING_TIME,
                            stats(19, 300830, 80, 300830, 300390, 301500, (300450, 301360)),
                            attribute="position",
                        ),
                    ),
                    samples=20,
                ),
            ),
        ),
    ),
)


def test_changes_and_perf_tables_read_like_the_tutorial() -> None:
    # The tutorial's sample output, with its spacing lost, as it is printed there.
    tutorial = (
        "===============================================2026-03-17T12:42:21.916829"
        "=============================================== "
        "-----------------------------------------dserver/MyServer/hw (from foo/bar/hw)"
        "------------------------------------------ "
        "- Published events "
        "foo/bar/hw/mode.change: 4 -> 5 (+1) last pushed server counter "
        "foo/bar/hw/position.change: 256 -> 315 (+59) last pushed server counter "
        "- Server performance mean median count minimum maximum 1% 10% 90% 99% "
        "Event Gaps [ms] 764.69±660.26 100.41 60 0.0500 40048.41 100.20 101.08 "
        "Push Time [μs] 47.17±2.48 40.00 60 4.00 116.00 30.00 65.00 "
        "----------------------------------------dserver/MyServer/top (from foo/bar/top)"
        "----------------------------------------- "
        "- Received events and callback changes "
        "foo/bar/hw/mode.idl5_change: 4 -> 5 (+1) events processed "
        ": 4 -> 5 (+1) last received server counter : 1 -> 2 (+1) callbacks "
        "foo/bar/hw/position.idl5_change: 256 -> 276 (+20) events processed "
        ": 256 -> 276 (+20) last received server counter "
        "- Client performance mean median count minimum maximum 1% 10% 90% 99% "
        "Event Gaps [ms] 991.47±688.67 300.91 20 0.130 14413.12 300.42 301.52 "
        "Sleep Time [ms] 720.68±702.40 0.0200 20 0.0100 14412.92 0.0100 0.120 "
        "Latency [s] 1.71±0.250 1.70 20 0.00 3.61 0.0200 3.39 "
        "Callbacks called 1.05±0.0500 1.00 20 1.00 2.00 1.00 1.00 "
        "Wake Count 1.40±0.390 1.00 20 1.00 9.00 1.00 1.00 "
        "mode Processing Time [μs] 127.00±0.00 127.00 1 127.00 127.00 "
        "position Processing Time [ms] 300.83±0.0800 300.83 19 300.39 301.50 300.45 301.36 "
        "===============================================2026-03-17T12:42:21.916829"
        "==============================================="
    )

    assert " ".join(render_poll(PERF_REPORT).split()) == tutorial


def test_perf_tables_align_their_columns() -> None:
    lines = render_poll(PERF_REPORT).splitlines()
    start = lines.index("- Client performance")

    assert lines[start + 1 : start + 9] == [
        "                                            mean  median  count  minimum   maximum"
        "  1%     10%     90%  99%",
        "    Event Gaps [ms]                991.47±688.67  300.91     20    0.130  14413.12"
        "      300.42  301.52",
        "    Sleep Time [ms]                720.68±702.40  0.0200     20   0.0100  14412.92"
        "      0.0100   0.120",
        "    Latency [s]                       1.71±0.250    1.70     20     0.00      3.61"
        "      0.0200    3.39",
        "    Callbacks called                 1.05±0.0500    1.00     20     1.00      2.00"
        "        1.00    1.00",
        "    Wake Count                        1.40±0.390    1.00     20     1.00      9.00"
        "        1.00    1.00",
        "    mode Processing Time [μs]        127.00±0.00  127.00      1   127.00    127.00",
        "    position Processing Time [ms]  300.83±0.0800  300.83     19   300.39    301.50"
        "      300.45  301.36",
    ]


def test_everything_the_json_carries_beyond_the_tutorial_is_shown() -> None:
    waiting = diff(None, snapshot("subscriber_waiting.json"))
    connected = diff(snapshot("subscriber_waiting.json"), snapshot("subscriber_1.json"))
    restarted = diff(snapshot("publisher_2.json"), snapshot("publisher_3.json"))
    resubscribed = SubscriptionChange(
        f"{PREFIX}foo/bar/hw/mode.idl5_change",
        missed_event_count=Change(0, 3),
        last_resubscribed=(None, "2026-03-17T12:00:00"),
    )

    assert render_report(waiting) == [
        "- Waiting to connect",
        "    test/monitor/counter/value.change: last attempt at 2026-11-21T00:59:11",
    ]
    assert render_report(connected)[-2:] == [
        "- No longer waiting to connect",
        "    test/monitor/counter/value.change",
    ]
    assert render_report(restarted)[:4] == [
        "- Counters went down (restarted, or dropped and subscribed again)",
        "    test/monitor/counter/value.change",
        "- Published events",
        "    test/monitor/counter/value.change: 120 -> 5 (-115) last pushed server counter",
    ]
    assert render_report(Report(subscription_changes=(resubscribed,))) == [
        "- Received events and callback changes",
        "    foo/bar/hw/mode.idl5_change: 0 -> 3 (+3) missed events detected",
        "                               : never -> 2026-03-17T12:00:00 last resubscribed",
    ]


def test_a_server_that_stops_answering_and_returns() -> None:
    silent = ServerEntry(
        HW,
        None,
        error="API_DeviceNotExported: Device dserver/myserver/hw is not exported\nmore",
    )
    back = ServerEntry(HW, Report(), silent_polls=2, last_answer=datetime(2026, 3, 17, 12, 0, 0, 5))
    time = datetime(2026, 3, 17, 12, 0, 30)

    assert render_poll(PollReport(time, (silent,))).splitlines()[2:4] == [
        "- No answer",
        "    API_DeviceNotExported: Device dserver/myserver/hw is not exported",
    ]
    assert render_poll(PollReport(time, (back,))).splitlines()[2:4] == [
        "- Answering again",
        "    no answer to 2 snapshot(s), so it may have restarted; changes are since "
        "2026-03-17T12:00:00.000005",
    ]


def test_a_server_that_answers_for_the_first_time_did_not_restart() -> None:
    first = ServerEntry(HW, Report(), silent_polls=3)

    assert render_poll(PollReport(datetime(2026, 3, 17), (first,))).splitlines()[2:4] == [
        "- First answer",
        "    no answer to the 3 snapshot(s) before, so everything is new",
    ]


@given(
    st.text(
        "abcXYZ/_:.,() 019é",
        min_size=WIDTH - 2 * MIN_FILL - 10,
        max_size=WIDTH + 10,
    )
)
def test_a_rule_keeps_its_fill_around_any_label(label: str) -> None:
    line = rule(label, "-")

    assert len(line) == max(WIDTH, len(label) + 2 * MIN_FILL)
    assert line.startswith("-" * MIN_FILL)
    assert line.endswith("-" * MIN_FILL)
    assert line.strip("-") == label


def test_a_server_label_wider_than_the_rules_keeps_its_dashes() -> None:
    server = MonitoredServer("dserver/Motor/crate7", tuple(f"sr/motor/axis-{i}" for i in range(9)))

    line = render_poll(PollReport(datetime(2026, 3, 17), (ServerEntry(server, Report()),)))

    assert f"---{server.label}---" in line.splitlines()


@pytest.mark.parametrize(("samples", "noted"), [(SAMPLE_LIMIT - 1, False), (SAMPLE_LIMIT, True)])
def test_a_table_that_filled_the_sample_buffer_says_events_may_be_missing(
    samples: int, noted: bool
) -> None:
    row = PerfRow(Metric.PUSH_TIME, stats(samples, 40, 1, 40, 4, 116))
    table = PerfTable((row,), samples=samples)

    lines = render_report(Report(server_perf=table, client_perf=table))

    notes = [i for i, line in enumerate(lines) if line == f"    {FULL_TABLE_NOTE}"]
    assert notes == ([3, 7] if noted else [])  # under each table's two lines
    assert len(f"    {FULL_TABLE_NOTE}") <= WIDTH


@given(snapshots(), snapshots())
def test_every_change_is_rendered_in_its_section(before: Snapshot, after: Snapshot) -> None:
    report = diff(before, after)
    lines = render_report(report)

    titles = [line for line in lines if line.startswith("- ")]
    assert all(line.startswith(("- ", "    ")) for line in lines)
    assert ("- New publishers" in titles) == bool(report.new_publishers)
    assert ("- Removed subscriptions" in titles) == bool(report.removed_subscriptions)
    assert len([line for line in lines if "last pushed server counter" in line]) == len(
        report.new_publishers
    ) + len(report.published)


def test_a_table_names_processing_rows_by_attribute_and_hides_latency_per_attribute() -> None:
    handled = [
        ClientPerfSample(attr, 100_000, 10, 50, 200, 1, 1, discarded=False)
        for attr in ("position", "", "mode")
    ]

    table = summarise_client_perf(handled)
    labels = [line.strip().split("  ")[0] for line in render_table(table)[1:]]

    assert table.get(Metric.LATENCY, "position") is not None
    assert labels == [
        "Event Gaps [ms]",
        "Sleep Time [μs]",
        "Latency [μs]",
        "Callbacks called",
        "Wake Count",
        f"{NO_ATTRIBUTE} Processing Time [μs]",
        "mode Processing Time [μs]",
        "position Processing Time [μs]",
    ]


def test_a_row_in_seconds_because_of_one_outlier_keeps_its_milliseconds() -> None:
    gaps = summarise([100_000] * 9 + [20_000_000])  # 100 ms, and one 20 s pause

    (_, row) = render_table(PerfTable((PerfRow(Metric.EVENT_GAPS, gaps),), 10))

    assert row.split()[:7] == ["Event", "Gaps", "[s]", "2.09±1.99", "0.100", "10", "0.100"]


# Magnitudes a table meets: tiny standard errors up to hours in microseconds.
table_values = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-9, max_value=1e10).flatmap(lambda v: st.sampled_from([v, -v])),
)


@given(
    st.lists(table_values, min_size=9, max_size=9),
    st.booleans(),
)
def test_every_cell_shows_at_least_three_significant_digits(
    values: list[float], in_micros: bool
) -> None:
    mean, error, median, low, high, p1, p10, p90, p99 = values
    error = abs(error)
    row = PerfRow(
        Metric.EVENT_GAPS if in_micros else Metric.WAKE_COUNT,
        Statistics(500, mean, error, median, low, high, p1, p10, p90, p99),
    )
    size = time_unit(mean)[1] if in_micros else 1.0

    # Skip the label: two words, and the unit of a duration.
    cells = render_table(PerfTable((row,), 500))[1].split()[3 if in_micros else 2 :]

    shown_mean, shown_error = cells[0].split("±")
    numbers = [shown_mean, shown_error, cells[1], *cells[3:]]
    assert cells[2] == "500"
    for value, shown in zip(
        [mean, error, median, low, high, p1, p10, p90, p99], numbers, strict=True
    ):
        assert _close_to_three_digits(float(shown), value / size), (value, shown)
        assert shown == "0.00" or _significant_digits(shown) >= 3, shown


def _close_to_three_digits(shown: float, exact: float) -> bool:
    """Whether ``shown`` is ``exact`` rounded to three significant digits or more."""
    return abs(shown - exact) <= 0.005 * abs(exact) * (1 + 1e-9)


def _significant_digits(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0")
    return len(digits)


SEEN = datetime(2026, 3, 17, 12, 0, 30)
SLOW = Finding(
    "slow-callback",
    Severity.WARNING,
    Subject(TOP.admin, "foo/bar/hw/position.change"),
    "dserver/MyServer/top spends 300 ms (median) handling each event of foo/bar/hw/position.change, "
    "longer than the 100 ms between two pushes by dserver/MyServer/hw; every other subscription "
    "of that process waits behind it.",
    {"processing_median_us": 300000, "push_gap_us": 100000},
)
LOST = Finding(
    "missed-events",
    Severity.ERROR,
    Subject(TOP.admin, "foo/bar/hw/mode.idl5_change"),
    "3 events of foo/bar/hw/mode.change were missed.",
    {"missed": 3},
)
DOWN = Finding("server-not-answering", Severity.ERROR, Subject(HW.admin), "no answer", {})
GONE = PollReport(
    SEEN,
    (
        ServerEntry(HW, Report()),
        ServerEntry(TOP, Report(went_down=(f"{PREFIX}foo/bar/hw/mode.idl5_change",))),
    ),
)


def test_findings_end_the_entry_of_their_server_wrapped_to_the_width() -> None:
    findings = Findings(
        SEEN, (LOST, SLOW), (Cleared(DOWN, since=datetime(2026, 3, 17, 12, 0, 10), polls=2),)
    )

    assert render_poll(GONE, findings) == textwrap.dedent(
        """\
        ==================================================2026-03-17T12:00:30===================================================
        -----------------------------------------dserver/MyServer/hw (from foo/bar/hw)------------------------------------------
        - Findings
            cleared: server-not-answering (held for 2 snapshots since 2026-03-17T12:00:10)
        ----------------------------------------dserver/MyServer/top (from foo/bar/top)-----------------------------------------
        - Counters went down (restarted, or dropped and subscribed again)
            foo/bar/hw/mode.idl5_change
        - Findings
            error: missed-events: 3 events of foo/bar/hw/mode.change were missed.
            warning: slow-callback: dserver/MyServer/top spends 300 ms (median) handling each event of
                foo/bar/hw/position.change, longer than the 100 ms between two pushes by dserver/MyServer/hw; every other
                subscription of that process waits behind it.
        ==================================================2026-03-17T12:00:30===================================================
        """
    )


def test_a_cleared_finding_names_its_stream_and_how_long_it_held() -> None:
    cleared = Findings(SEEN, cleared=(Cleared(SLOW, since=datetime(2026, 3, 17, 12), polls=1),))

    assert render_poll(GONE, cleared).splitlines()[-3:-1] == [
        "- Findings",
        "    cleared: slow-callback on foo/bar/hw/position.change (held for 1 snapshot since "
        "2026-03-17T12:00:00)",
    ]


def test_no_findings_leave_the_snapshot_as_it_was() -> None:
    others = Findings(SEEN, (Finding("server-restarted", Severity.WARNING, Subject("x"), "", {}),))

    assert render_poll(GONE, Findings(SEEN)) == render_poll(GONE, others) == render_poll(GONE)


@given(st.text("ab -/.:", max_size=400), st.sampled_from(list(Severity)))
def test_a_finding_keeps_every_word_within_the_width(message: str, severity: Severity) -> None:
    finding = Finding("falling-behind", severity, Subject(HW.admin), message, {})

    lines = render_poll(
        PollReport(SEEN, (ServerEntry(HW, None, error="e"),)), Findings(SEEN, (finding,))
    )
    section = lines.splitlines()[5:-1]

    assert " ".join(" ".join(section).split()) == (
        f"{severity.label}: falling-behind: {' '.join(message.split())}".strip()
    )
    assert section[0].startswith("    " + severity.label)
    for line in section:
        assert len(line) <= WIDTH or len(line.split()) == 1
    for line in section[1:]:
        assert line.startswith("        ")
