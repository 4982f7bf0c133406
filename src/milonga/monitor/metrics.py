"""The monitor's polls as Prometheus metrics: `EventSystemMetrics`, a collector.

The poll loop hands every poll to `EventSystemMetrics.update`.  A scrape reads the
latest poll: `EventSystemMetrics.collect` builds its metric families for a
`prometheus_client` registry, and `EventSystemMetrics.text` writes the same series in the
text format, many times quicker, for `milonga.monitor.serve`.  One walk over the poll
(`_walk`) feeds both.  The names and labels are those of docs/prometheus.md:

- ``tango_server_up{server}``, ``tango_event_not_connected{server}`` and
  ``tango_event_callbacks{server,stream}``: gauges;
- ``tango_event_pushed_total{server,stream}`` (publisher side),
  ``tango_event_received_total``, ``tango_event_missed_total`` and
  ``tango_event_discarded_total`` ``{server,stream}`` (subscriber side): counters;
- ``tango_event_latency_seconds`` and ``tango_event_processing_seconds``
  ``{server,attribute}``, ``tango_event_gap_seconds{server,side}`` and
  ``tango_event_push_seconds{server}``: histograms of the perf samples, on `BUCKETS`;
- ``milonga_finding{server,stream,kind,severity}``: 1 per finding that holds;
- ``milonga_last_poll_timestamp_seconds``: when the latest poll was taken.

Counters are the servers' own, as their last answer gives them: a publisher's count of a
stream, a subscription's ``event_count``, ``missed_event_count`` and
``discarded_event_count``.  An exporter restarting changes nothing; a server restarting
(or a subscription made again) makes them drop, which Prometheus's ``rate()`` and
``increase()`` read as a reset, as they should.  The one case they get wrong is a 32-bit
counter wrapping (read as a reset: the 2**32 minus the value before are lost), after
weeks of pushing at high rates.  A server that does not answer keeps its series as at
its last answer, with ``tango_server_up`` 0; a stream gone from a server that answers,
and every series of a server no longer polled, is dropped.

The ``stream`` label is unique per server and family (`stream_labels`): the short name,
the full ``tango://host:port/...`` one where two of the server's streams have that short
name, and the stream as cppTango writes it (with its kind, ``idl5_change``) where that
still clashes.  Histogram observations below 0 (a latency measured across two hosts'
clocks that disagree) are counted as 0, in the buckets and in the sum.  Pure code, no
Tango.
"""

from __future__ import annotations

import math
import operator
import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from milonga.monitor.figures import MICROS_PER_SECOND
from milonga.monitor.findings import Finding, Findings, shared_of, subject_stream
from milonga.monitor.poll import PollReport, ServerEntry
from milonga.monitor.snapshot import ClientPerfSample, ServerPerfSample, Snapshot
from milonga.monitor.stats import event_gaps

BUCKET_MICROS = (
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    1_000_000,
    10_000_000,
)
"""The upper bounds of every histogram's buckets, in μs, as perf samples count time."""
BUCKETS = tuple(micros / MICROS_PER_SECOND for micros in BUCKET_MICROS)
"""The same bounds in seconds, as the histograms show them: 50 μs to 10 s."""
_LE = (*(repr(bound) for bound in BUCKETS), "+Inf")
"""The ``le`` label of each bucket."""

LATENCY = "tango_event_latency_seconds"
PROCESSING = "tango_event_processing_seconds"
GAP = "tango_event_gap_seconds"
PUSH = "tango_event_push_seconds"


class Family(NamedTuple):
    """What a metric family is: its name, as samples carry it, and what it says."""

    name: str
    """The name of its samples (a counter's with ``_total``; a histogram's without
    ``_bucket``, ``_count`` and ``_sum``)."""
    kind: str
    """``gauge``, ``counter`` or ``histogram``."""
    help: str
    labels: tuple[str, ...]


UP = Family(
    "tango_server_up", "gauge", "1 if the server answered the last poll, else 0.", ("server",)
)
NOT_CONNECTED = Family(
    "tango_event_not_connected",
    "gauge",
    "Subscriptions the server keeps trying to connect.",
    ("server",),
)
PUSHED = Family(
    "tango_event_pushed_total", "counter", "Events pushed per stream.", ("server", "stream")
)
RECEIVED = Family(
    "tango_event_received_total",
    "counter",
    "Events received per subscription.",
    ("server", "stream"),
)
MISSED = Family(
    "tango_event_missed_total",
    "counter",
    "Events the subscriber found missing per subscription.",
    ("server", "stream"),
)
DISCARDED = Family(
    "tango_event_discarded_total",
    "counter",
    "Events dropped as repeats per subscription.",
    ("server", "stream"),
)
CALLBACKS = Family(
    "tango_event_callbacks",
    "gauge",
    "Callbacks registered per subscription.",
    ("server", "stream"),
)
HISTOGRAMS = {
    LATENCY: Family(
        LATENCY,
        "histogram",
        "From an event's server timestamp to its first callback.",
        ("server", "attribute"),
    ),
    PROCESSING: Family(
        PROCESSING,
        "histogram",
        "How long handling one event took, every callback included.",
        ("server", "attribute"),
    ),
    GAP: Family(
        GAP,
        "histogram",
        "Time between two events pushed (side server) or handled (side client).",
        ("server", "side"),
    ),
    PUSH: Family(PUSH, "histogram", "How long handing one event to ZMQ took.", ("server",)),
}
FINDING = Family(
    "milonga_finding",
    "gauge",
    "1 while the monitor's finding holds; see docs/findings.md for each kind.",
    ("server", "stream", "kind", "severity"),
)
LAST_POLL = Family(
    "milonga_last_poll_timestamp_seconds", "gauge", "Unix time of the exporter's latest poll.", ()
)
POLLING_PERIOD = Family(
    "milonga_polling_period_seconds",
    "gauge",
    "Time between two polls of the exporter: one whose latest poll is several periods old "
    "has stalled.",
    (),
)
FAMILIES = (
    UP,
    NOT_CONNECTED,
    PUSHED,
    RECEIVED,
    MISSED,
    DISCARDED,
    CALLBACKS,
    *HISTOGRAMS.values(),
    FINDING,
    LAST_POLL,
    POLLING_PERIOD,
)
"""Every family, in the order a scrape shows them."""

_HistogramKey = tuple[str, str]
"""A histogram of one server: its family and the value of its second label ("" for
`PUSH`, which has none)."""
_Counts = tuple[tuple[int, ...], float]
"""A histogram's observations: how many are at most each bound of `BUCKET_MICROS`
(cumulative, as Prometheus counts buckets), then how many in all; and their sum in μs."""
Labels = tuple[str, ...]


class _Server(NamedTuple):
    """What is exported of one server: never changed once made, so that a scrape can read
    it while the next poll is taken."""

    up: bool
    snapshot: Snapshot | None
    """Its last answer; None if it has not answered since it was first polled."""
    histograms: Mapping[_HistogramKey, _Counts]


_NEVER_ANSWERED = _Server(False, None, {})


class _View(NamedTuple):
    """Everything a scrape reads, swapped whole at the end of each `update`."""

    generation: int
    time: datetime | None
    servers: Mapping[str, _Server]
    findings: tuple[Finding, ...]
    period: float | None
    """The polling period, if known."""


class EventSystemMetrics:
    """The metrics of the latest poll, as a `prometheus_client` collector.

    `update` takes each poll, on the poll loop's thread; `collect` and `text` may run on
    any thread at the same time, and never wait for an update under way: they read the
    poll before.
    """

    def __init__(self, polling_period: float | None = None) -> None:
        """``polling_period``, the seconds between two polls, is exported with the
        metrics when given, for alerts to tell a stalled exporter."""
        self._view = _View(0, None, {}, (), polling_period)
        self._updating = threading.Lock()
        self._rendering = threading.Lock()
        self._prefixes: dict[tuple[str, Labels], tuple[str, ...]] = {}

    @property
    def generation(self) -> int:
        """How many polls `update` took: what a scrape shows changes only when this does."""
        return self._view.generation

    def update(self, report: PollReport, findings: Findings) -> None:
        """Take the poll of ``report`` and its ``findings``: later scrapes show them."""
        with self._updating:
            before = self._view
            servers = {
                entry.server.admin: _next_server(before.servers.get(entry.server.admin), entry)
                for entry in report.entries
            }
            self._view = before._replace(
                generation=before.generation + 1,
                time=report.time,
                servers=servers,
                findings=findings.active,
            )

    def collect(self) -> Iterable[Metric]:
        """The metric families of the latest poll, as `prometheus_client` objects."""
        families = _MetricFamilies()
        _walk(self._view, families)
        return families.metrics()

    def text(self) -> tuple[int, bytes]:
        """The latest poll's generation, and its metrics in the Prometheus text format
        (version 0.0.4, `CONTENT_TYPE`): the families of `collect`, written many times
        quicker than `prometheus_client.generate_latest` writes them, for a scrape of
        hundreds of servers."""
        view = self._view
        with self._rendering:  # the label prefixes are shared by renderings
            text = _Text(self._prefixes)
            _walk(view, text)
            self._prefixes = text.prefixes
        return view.generation, text.render()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of `EventSystemMetrics.text`."""


class _Sink(Protocol):
    """Where `_walk` sends the series of a view."""

    def sample(self, family: Family, labels: Labels, value: float) -> None:
        """One series of a gauge or a counter."""

    def histogram(self, family: Family, labels: Labels, counts: _Counts) -> None:
        """One series of a histogram."""


def _walk(view: _View, sink: _Sink) -> None:
    """Send every series of ``view`` to ``sink``: the one place that says what a scrape
    shows."""
    for admin, server in view.servers.items():
        sink.sample(UP, (admin,), 1 if server.up else 0)
        if server.snapshot is None:
            continue
        publishers = server.snapshot.server.publishers if server.snapshot.server else {}
        for stream, label in stream_labels(tuple(publishers)).items():
            sink.sample(PUSHED, (admin, label), publishers[stream])
        client = server.snapshot.client
        sink.sample(NOT_CONNECTED, (admin,), len(client.not_connected) if client else 0)
        if client is not None:
            for topic, label in stream_labels(tuple(client.subscriptions)).items():
                subscription = client.subscriptions[topic]
                labels = (admin, label)
                sink.sample(RECEIVED, labels, subscription.event_count)
                sink.sample(MISSED, labels, subscription.missed_event_count)
                sink.sample(DISCARDED, labels, subscription.discarded_event_count)
                sink.sample(CALLBACKS, labels, subscription.callback_count)
        for (name, label), counts in server.histograms.items():
            sink.histogram(HISTOGRAMS[name], (admin,) if name == PUSH else (admin, label), counts)
    for finding in view.findings:
        subject = finding.subject
        held = (subject.server, subject.stream or "", finding.kind, finding.severity.label)
        sink.sample(FINDING, held, 1)
    if view.time is not None:
        sink.sample(LAST_POLL, (), view.time.timestamp())
    if view.period is not None:
        sink.sample(POLLING_PERIOD, (), view.period)


def stream_labels(names: tuple[str, ...]) -> dict[str, str]:
    """The ``stream`` label of each of one server's published streams or subscribed
    topics ``names`` (as cppTango writes them), unique among them: its short name, or its
    full one where two of ``names`` share that short name (`subject_stream`, as findings
    name streams), or, where two still get one label, the name as it is."""
    shared = shared_of(names)
    labels = {name: subject_stream(name, shared) for name in names}
    if shared:
        clashes = Counter(labels.values())
        labels = {name: name if clashes[label] > 1 else label for name, label in labels.items()}
    return labels


def _next_server(before: _Server | None, entry: ServerEntry) -> _Server:
    """What to export of ``entry``'s server after this poll, given what was exported
    before (None: it was not polled at the poll before)."""
    snapshot = entry.snapshot
    if snapshot is None:
        return (before or _NEVER_ANSWERED)._replace(up=False)
    histograms = (before or _NEVER_ANSWERED).histograms
    return _Server(up=True, snapshot=snapshot, histograms=_observed(histograms, entry))


def _observed(
    before: Mapping[_HistogramKey, _Counts], entry: ServerEntry
) -> Mapping[_HistogramKey, _Counts]:
    """The histograms of ``entry``'s server with the samples of its answer added: each
    sample is new, as every query empties the samples.  The gaps leave out the first one
    after sampling was turned on (`stats.event_gaps`, with `ServerEntry.unsampled`);
    discarded events count only towards nothing but the client's wake-ups, as in
    `stats.summarise_client_batches`, so they are left out of every histogram."""
    assert entry.snapshot is not None
    server, client = entry.snapshot.server, entry.snapshot.client
    server_samples = server.perf if server else None
    client_samples = client.perf if client else None
    if not server_samples and not client_samples:
        return before  # the usual case without --monitor: nothing to copy
    histograms = dict(before)
    if server_samples:
        _server_observations(histograms, server_samples, entry.unsampled.server)
    if client_samples:
        _client_observations(histograms, client_samples, entry.unsampled.client)
    return histograms


def _server_observations(
    histograms: dict[_HistogramKey, _Counts],
    samples: Sequence[ServerPerfSample],
    just_started: bool,
) -> None:
    _observe(histograms, (GAP, "server"), event_gaps(samples, samples, just_started))
    _observe(histograms, (PUSH, ""), [sample.push_event_micros for sample in samples])


def _client_observations(
    histograms: dict[_HistogramKey, _Counts],
    samples: Sequence[ClientPerfSample],
    just_started: bool,
) -> None:
    handled = [sample for sample in samples if not sample.discarded]
    _observe(histograms, (GAP, "client"), event_gaps(samples, handled, just_started))
    latencies: dict[str, list[int]] = {}
    processing: dict[str, list[int]] = {}
    for sample in handled:
        processing.setdefault(sample.attr_name, []).append(sample.process_micros)
        if sample.first_callback_latency_micros is not None:
            latencies.setdefault(sample.attr_name, []).append(sample.first_callback_latency_micros)
    for attribute, values in processing.items():
        _observe(histograms, (PROCESSING, attribute), values)
    for attribute, values in latencies.items():
        _observe(histograms, (LATENCY, attribute), values)


def _observe(
    histograms: dict[_HistogramKey, _Counts], key: _HistogramKey, micros: Sequence[float]
) -> None:
    """Add ``micros`` to the histogram ``key`` of ``histograms``, as a new tuple; values
    below 0 (clocks of two hosts that disagree) count as 0, in the buckets and the sum."""
    if not micros:
        return
    ordered = sorted(max(observed, 0) for observed in micros)
    counts = (*(bisect_right(ordered, bound) for bound in BUCKET_MICROS), len(ordered))
    before = histograms.get(key)
    if before is None:
        histograms[key] = (counts, sum(ordered))
    else:
        histograms[key] = (
            tuple(map(operator.add, before[0], counts)),
            before[1] + sum(ordered),
        )


class _MetricFamilies:
    """A sink that makes `prometheus_client` metric families."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}
        for family in FAMILIES:
            labels = list(family.labels)
            if family.kind == "counter":
                metric: Metric = CounterMetricFamily(family.name, family.help, labels=labels)
            elif family.kind == "histogram":
                metric = HistogramMetricFamily(family.name, family.help, labels=labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=labels)
            self._families[family.name] = metric

    def sample(self, family: Family, labels: Labels, value: float) -> None:
        metric = self._families[family.name]
        assert isinstance(metric, CounterMetricFamily | GaugeMetricFamily)
        metric.add_metric(labels, value)

    def histogram(self, family: Family, labels: Labels, counts: _Counts) -> None:
        metric = self._families[family.name]
        assert isinstance(metric, HistogramMetricFamily)
        metric.add_metric(
            labels,
            buckets=list(zip(_LE, map(float, counts[0]), strict=True)),
            sum_value=counts[1] / MICROS_PER_SECOND,
        )

    def metrics(self) -> list[Metric]:
        return list(self._families.values())


class _Text:
    """A sink that writes the Prometheus text format, version 0.0.4.

    Each series' text up to its value (name and labels, escaped; for a histogram, that of
    each of its lines) is kept from one rendering to the next in ``prefixes``: labels
    seldom change, values do.
    """

    def __init__(self, prefixes: Mapping[tuple[str, Labels], tuple[str, ...]]) -> None:
        self._before = prefixes
        self.prefixes: dict[tuple[str, Labels], tuple[str, ...]] = {}
        self._lines: dict[str, list[str]] = {family.name: [] for family in FAMILIES}

    def _prefixes(self, family: Family, labels: Labels) -> tuple[str, ...]:
        """The text before the value of each line of ``family``'s series of ``labels``:
        one line, or a histogram's buckets, count and sum."""
        key = (family.name, labels)
        prefixes = self._before.get(key)
        if prefixes is None:
            pairs = [
                f'{name}="{_escape(value)}"'
                for name, value in zip(family.labels, labels, strict=True)
            ]
            if family.kind != "histogram":
                prefixes = (_line_prefix(family.name, pairs),)
            else:
                prefixes = (
                    *(_line_prefix(f"{family.name}_bucket", [*pairs, f'le="{le}"']) for le in _LE),
                    _line_prefix(f"{family.name}_count", pairs),
                    _line_prefix(f"{family.name}_sum", pairs),
                )
        self.prefixes[key] = prefixes
        return prefixes

    def sample(self, family: Family, labels: Labels, value: float) -> None:
        (prefix,) = self._prefixes(family, labels)
        self._lines[family.name].append(f"{prefix}{_number(value)}\n")

    def histogram(self, family: Family, labels: Labels, counts: _Counts) -> None:
        buckets, total = counts
        values = (*buckets, buckets[-1], _number(total / MICROS_PER_SECOND))
        self._lines[family.name].extend(map(_line, self._prefixes(family, labels), values))

    def render(self) -> bytes:
        """The text of every family, those without series included."""
        parts = []
        for family in FAMILIES:
            parts.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
            parts.append(f"# TYPE {family.name} {family.kind}\n")
            parts.extend(self._lines[family.name])
        return "".join(parts).encode()


def _line_prefix(name: str, pairs: Sequence[str]) -> str:
    """``name{label="value",...} ``: a line of the text format up to its value."""
    return f"{name}{{{','.join(pairs)}}} " if pairs else f"{name} "


def _line(prefix: str, value: object) -> str:
    """A whole line of the text format."""
    return f"{prefix}{value}\n"


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    """A family's help as the text format writes it."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as the text format writes it: integers without a fraction."""
    if isinstance(value, int):
        return str(value)
    return repr(value) if math.isfinite(value) else _SPECIAL[str(value)]


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}
