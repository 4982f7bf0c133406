"""The event monitor: snapshots of Tango event systems, what changed, and how fast.

The pure core takes no Tango object: `parse_snapshot` reads a `QueryEventSystem` reply,
`diff` compares two snapshots into a `Report`, `summarise` and the `summarise_*_perf`
functions make the performance statistics, and `render_report` and `render_poll` turn
reports into text.  The Tango edge queries servers (`query_server`, `Collector`) or the
calling process itself (`query_process`).  `tango-event-monitor` is built on top.
"""

from milonga.monitor.collector import (
    CallError,
    Collector,
    MonitorSetupError,
    query_process,
    query_server,
    resolve_servers,
    set_perf_monitoring,
    set_process_perf_monitoring,
)
from milonga.monitor.diff import (
    Change,
    Publisher,
    PublisherChange,
    Report,
    SubscriptionChange,
    Unsampled,
    diff,
)
from milonga.monitor.jsonl import JsonLinesWriter, poll_record
from milonga.monitor.poll import MonitoredServer, Poll, PollHistory, PollReport, Reply, ServerEntry
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
    PerfRow,
    PerfTable,
    Statistics,
    summarise,
    summarise_client_perf,
    summarise_server_perf,
)

__all__ = [
    "CallError",
    "Change",
    "ClientPerfSample",
    "ClientSide",
    "Collector",
    "JsonLinesWriter",
    "MonitorSetupError",
    "MonitoredServer",
    "NotConnected",
    "PerfRow",
    "PerfTable",
    "Poll",
    "PollHistory",
    "PollReport",
    "Publisher",
    "PublisherChange",
    "Reply",
    "Report",
    "ServerEntry",
    "ServerPerfSample",
    "ServerSide",
    "Snapshot",
    "SnapshotFormatError",
    "Statistics",
    "Subscription",
    "SubscriptionChange",
    "Unsampled",
    "diff",
    "parse_snapshot",
    "poll_record",
    "query_process",
    "query_server",
    "render_poll",
    "render_report",
    "render_table",
    "resolve_servers",
    "set_perf_monitoring",
    "set_process_perf_monitoring",
    "summarise",
    "summarise_client_perf",
    "summarise_server_perf",
]
