"""Prometheus collectors a device server or client registers to export its own figures.

`SchedulerCollector` exports what `CallbackScheduler.stats` says of each queue;
`ProcessEventSystemCollector` exports this process's own event system, with the same
families as the event monitor's exporter (`milonga.monitor.metrics`).  Register them in a
`prometheus_client` registry and serve it as usual::

    from prometheus_client import REGISTRY, start_http_server
    from milonga.prometheus import ProcessEventSystemCollector, SchedulerCollector

    REGISTRY.register(SchedulerCollector(scheduler))
    REGISTRY.register(ProcessEventSystemCollector())
    start_http_server(9100, "127.0.0.1")

Both read their figures when scraped, and neither raises from `collect`: a scrape that
failed would lose every other family of the registry too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import datetime

import tango
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from milonga.monitor.analysis import Analysis
from milonga.monitor.collector import MonitorSetupError, process_name, process_reply
from milonga.monitor.metrics import EventSystemMetrics
from milonga.monitor.poll import MonitoredServer, Poll, Reply
from milonga.scheduler import CallbackScheduler
from milonga.scheduler.stats import QueueStats

SCHEDULER_LABELS = ("scheduler", "queue")


class SchedulerCollector:
    """Exports the queues of one or more `CallbackScheduler`, from `stats` at each scrape.

    Every family is labelled ``scheduler`` (the name given, so that the schedulers of one
    process stay apart) and ``queue`` (the first stream the queue serves, as `stats` lists
    them: the oldest it still serves, so the label outlives streams joining or leaving a
    shared queue).  A prometheus_client registry refuses two collectors exporting the same
    families, so one collector watches every scheduler of a process: `add` the others.
    A scheduler that is shut down has no queues left and exports nothing.
    """

    def __init__(self, scheduler: CallbackScheduler, *, name: str = "default") -> None:
        self._lock = threading.Lock()
        self._schedulers: dict[str, CallbackScheduler] = {}
        self.add(scheduler, name=name)

    def add(self, scheduler: CallbackScheduler, *, name: str) -> None:
        """Export ``scheduler`` too, labelled ``scheduler=name``.

        Raises TypeError if ``scheduler`` is not a `CallbackScheduler`, and ValueError if
        ``name`` is empty or taken, or ``scheduler`` is exported already.
        """
        if not isinstance(scheduler, CallbackScheduler):
            raise TypeError(
                f"scheduler must be a milonga CallbackScheduler, got {type(scheduler).__name__}"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"scheduler name must be a non-empty string, got {name!r}; give the name "
                "its series should carry in their 'scheduler' label"
            )
        with self._lock:
            if name in self._schedulers:
                raise ValueError(
                    f"a scheduler named {name!r} is exported already; give each scheduler "
                    "of the process its own name"
                )
            if any(known is scheduler for known in self._schedulers.values()):
                raise ValueError(
                    f"scheduler {scheduler.name} is exported already; each scheduler is "
                    "added once, or its events would be counted twice"
                )
            self._schedulers[name] = scheduler

    def describe(self) -> list[Metric]:
        """The families, without samples: what a registry checks names against."""
        return _scheduler_families({})

    def collect(self) -> Iterator[Metric]:
        """Every family, with one sample per queue of every scheduler."""
        with self._lock:
            schedulers = dict(self._schedulers)
        queues = {name: scheduler.stats().queues for name, scheduler in schedulers.items()}
        yield from _scheduler_families(queues)


def _scheduler_families(queues: dict[str, tuple[QueueStats, ...]]) -> list[Metric]:
    """The scheduler families holding ``queues``, by scheduler name."""
    depth = GaugeMetricFamily(
        "milonga_scheduler_queue_depth", "Events waiting in the queue.", labels=SCHEDULER_LABELS
    )
    size = GaugeMetricFamily(
        "milonga_scheduler_queue_size",
        "Events the queue holds before it drops its oldest.",
        labels=SCHEDULER_LABELS,
    )
    streams = GaugeMetricFamily(
        "milonga_scheduler_queue_streams",
        "Event streams the queue serves.",
        labels=SCHEDULER_LABELS,
    )
    processed = CounterMetricFamily(
        "milonga_scheduler_processed",
        "Events workers took from the queue.",
        labels=SCHEDULER_LABELS,
    )
    dropped = CounterMetricFamily(
        "milonga_scheduler_dropped",
        "Events dropped because the queue was full.",
        labels=SCHEDULER_LABELS,
    )
    callback = GaugeMetricFamily(
        "milonga_scheduler_callback_seconds",
        "Time the callbacks of one event took, over the queue's last 1024 events.",
        labels=(*SCHEDULER_LABELS, "percentile"),
    )
    delay = GaugeMetricFamily(
        "milonga_scheduler_queueing_delay_seconds",
        "Time from Tango's callback to the start of the user's callbacks, over the "
        "queue's last 1024 events.",
        labels=(*SCHEDULER_LABELS, "percentile"),
    )
    for name, stats in queues.items():
        for queue in stats:
            labels = [name, queue.streams[0]]
            depth.add_metric(labels, queue.depth)
            size.add_metric(labels, queue.size)
            streams.add_metric(labels, len(queue.streams))
            processed.add_metric(labels, queue.processed)
            dropped.add_metric(labels, queue.dropped)
            _add_percentiles(callback, labels, queue.callback_p50, queue.callback_p99)
            _add_percentiles(delay, labels, queue.queueing_delay_p50, queue.queueing_delay_p99)
    return [depth, size, streams, processed, dropped, callback, delay]


def _add_percentiles(
    family: GaugeMetricFamily, labels: list[str], p50: float | None, p99: float | None
) -> None:
    """Add ``p50`` and ``p99`` to ``family``, labelled ``percentile`` 50 and 99, each
    unless it is None: the queue has handled no event yet.

    Gauges, not a summary: a summary needs the sum of every callback time, which the
    statistics do not keep, and Prometheus reserves the ``quantile`` label for summaries.
    """
    for percentile, value in (("50", p50), ("99", p99)):
        if value is not None:
            family.add_metric([*labels, percentile], value)


class ProcessEventSystemCollector:
    """Exports this process's own event system, as the monitor's exporter exports servers.

    Each scrape is one poll: it queries the process (as `query_process` does), feeds the
    reply through an `Analysis` of its own, and exports the
    `EventSystemMetrics` families (``tango_event_*``, ``tango_server_up``,
    ``milonga_finding``...).  The ``server`` label names the process: its admin device
    ``dserver/Executable/instance`` once the process runs a device server, else
    ``client/<hostname>/<pid>``.  A device server's process is a client until its server
    has started (``tango.Util`` exists); a scrape before then exports it under the
    client name, whose series go at the first scrape after.

    Nothing touches Tango before the first scrape.  A query that fails (the Tango API of
    the process is cleaned up, say) exports the process with ``tango_server_up`` 0, as
    the monitor does with a server that does not answer.  Histograms appear only while
    this process's perf sampling is on (`milonga.monitor.set_process_perf_monitoring`),
    which this collector leaves as it is.  A query empties the perf samples, so with two
    scrapers each sees only the samples taken since its own last scrape.

    Raises `MonitorSetupError` on a PyTango that cannot query its own process (before 10.3).
    """

    def __init__(self) -> None:
        if not hasattr(tango.ApiUtil, "query_event_system"):
            raise MonitorSetupError(
                "ProcessEventSystemCollector needs PyTango 10.3 or newer, whose ApiUtil can "
                f"query this process's event system; this process runs PyTango "
                f"{tango.__version__}: install pytango>=10.3 in its environment"
            )
        self._lock = threading.Lock()
        self._analysis = Analysis()
        self._metrics = EventSystemMetrics()
        self._server: MonitoredServer | None = None

    def describe(self) -> Iterable[Metric]:
        """The families as of the last scrape, without querying the process."""
        return self._metrics.collect()

    def collect(self) -> Iterable[Metric]:
        """Query the process once, and every family as of that poll."""
        with self._lock:  # scrapes run in parallel; the history takes polls in turn
            poll = Poll(datetime.now().astimezone(), (self._reply(),))
            update = self._analysis.add(poll)
            self._metrics.update(update.report, update.findings)
        return self._metrics.collect()

    def _reply(self) -> Reply:
        """This process's reply, or why there is none."""
        return process_reply(self._process())

    def _process(self) -> MonitoredServer:
        """How this process is named: a device server's name, once known, stays."""
        if self._server is not None:
            return self._server
        server = process_name()
        if server.admin.startswith("dserver/"):
            self._server = server
        return server
