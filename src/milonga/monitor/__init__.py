"""The event monitor: snapshots of Tango event systems, what changed, how fast, and what
it means.

The pure core takes no Tango object: `parse_snapshot` reads a `QueryEventSystem` reply,
`diff` compares two snapshots into a `Report`, `summarise` and the `summarise_*_perf`
functions make the performance statistics, `Diagnostician` and `findings_of` turn polls
into `Findings`, and `render_report` and `render_poll` turn reports into text.  The Tango
edge queries servers (`query_server`, `Collector`) or the calling process itself
(`query_process`).  `tango-event-monitor` is built on top.

The names of the Tango edge are imported on first use, so that importing this package,
or any of its pure modules, does not import Tango.
"""

from typing import TYPE_CHECKING

from milonga._lazy import lazy_attributes
from milonga.monitor.analysis import Analysis, PollUpdate, findings_of
from milonga.monitor.diff import (
    Change,
    Publisher,
    PublisherChange,
    Report,
    SubscriptionChange,
    Unsampled,
    diff,
)
from milonga.monitor.findings import (
    Cleared,
    Diagnostician,
    Finding,
    Findings,
    Severity,
    Subject,
)
from milonga.monitor.jsonl import (
    JsonLinesWriter,
    RecordProblem,
    iter_polls,
    poll_record,
    read_polls,
)
from milonga.monitor.poll import (
    MonitoredServer,
    Poll,
    PollHistory,
    PollReport,
    Reply,
    ServerEntry,
)
from milonga.monitor.render import render_poll, render_report, render_table
from milonga.monitor.snapshot import (
    ClientPerfSample,
    ClientSide,
    NotConnected,
    ServerPerfSample,
    ServerSide,
    Snapshot,
    SnapshotFormatError,
    Subscription,
    parse_snapshot,
)
from milonga.monitor.stats import (
    Metric,
    PerfRow,
    PerfTable,
    SampleBatch,
    Statistics,
    summarise,
    summarise_client_perf,
    summarise_server_perf,
)

if TYPE_CHECKING:
    from milonga.monitor.collector import (
        CallError,
        Collector,
        MonitorSetupError,
        Selection,
        query_process,
        query_server,
        resolve_servers,
        select_servers,
        set_perf_monitoring,
        set_process_perf_monitoring,
    )


__all__ = [
    "Analysis",
    "CallError",
    "Change",
    "Cleared",
    "ClientPerfSample",
    "ClientSide",
    "Collector",
    "Diagnostician",
    "Finding",
    "Findings",
    "JsonLinesWriter",
    "Metric",
    "MonitorSetupError",
    "MonitoredServer",
    "NotConnected",
    "PerfRow",
    "PerfTable",
    "Poll",
    "PollHistory",
    "PollReport",
    "PollUpdate",
    "Publisher",
    "PublisherChange",
    "RecordProblem",
    "Reply",
    "Report",
    "SampleBatch",
    "Selection",
    "ServerEntry",
    "ServerPerfSample",
    "ServerSide",
    "Severity",
    "Snapshot",
    "SnapshotFormatError",
    "Statistics",
    "Subject",
    "Subscription",
    "SubscriptionChange",
    "Unsampled",
    "diff",
    "findings_of",
    "iter_polls",
    "parse_snapshot",
    "poll_record",
    "query_process",
    "query_server",
    "read_polls",
    "render_poll",
    "render_report",
    "render_table",
    "resolve_servers",
    "select_servers",
    "set_perf_monitoring",
    "set_process_perf_monitoring",
    "summarise",
    "summarise_client_perf",
    "summarise_server_perf",
]


if not TYPE_CHECKING:  # mypy reads the imports above, and still flags unknown names
    __getattr__ = lazy_attributes(
        __name__,
        dict.fromkeys(
            (
                "CallError",
                "Collector",
                "MonitorSetupError",
                "query_process",
                "query_server",
                "Selection",
                "resolve_servers",
                "select_servers",
                "set_perf_monitoring",
                "set_process_perf_monitoring",
            ),
            "milonga.monitor.collector",
        ),
    )
