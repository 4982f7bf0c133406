"""The event-system health of one test: what its process and the named servers did.

`EventSystemHealth` polls this process and the servers of the ini option
``tango_event_health_servers`` right before a test's call and right after it, as the
monitor polls, with performance sampling on in between (and back off afterwards where it
was off).  The two polls go through the monitor's `Analysis`: the diff of each process
and the findings.  The verdict is `Checkup.problems`: subscriptions that missed events,
and findings of severity error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import tango

from milonga.monitor import Analysis, Collector, Poll, PollUpdate, Severity, render_poll
from milonga.monitor.collector import (
    CallError,
    MonitorSetupError,
    process_name,
    process_reply,
    select_servers,
    set_process_perf_monitoring,
)
from milonga.monitor.figures import stream_of_topic
from milonga.monitor.poll import MonitoredServer

HEALTH_TIMEOUT = 10.0
"""Seconds a server has to answer a health poll: generous, so a busy machine does not
make a server look frozen."""


@dataclass(frozen=True)
class Baseline:
    """The poll taken before a test, and where sampling was switched on for it."""

    poll: Poll
    switched: tuple[MonitoredServer, ...]


@dataclass(frozen=True)
class Checkup:
    """What one test did to the event systems: the monitor's update and the verdict."""

    update: PollUpdate
    missed: tuple[str, ...]
    """One line per subscription that missed events during the test."""
    errors: tuple[str, ...]
    """One line per finding of severity error."""
    left_on: tuple[str, ...] = ()
    """One line per server where sampling could not be switched back off."""

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the test is unhealthy; empty if it is not."""
        return self.missed + self.errors

    def render(self) -> str:
        """The report section: the verdict, then the poll as the monitor prints it."""
        verdict = (
            ["Problems:", *(f"  {line}" for line in self.problems)]
            if self.problems
            else ["No missed events and no error finding."]
        )
        left_on = [f"  {line}" for line in self.left_on]
        return "\n".join(
            [*verdict, *left_on, "", render_poll(self.update.report, self.update.findings)]
        )


class EventSystemHealth:
    """Takes the polls around checked tests; `close` when the session ends.

    ``servers`` are names as `tango-event-monitor` takes them: devices, admin devices,
    TRLs or patterns.  They are looked up at the first `begin`, which raises
    `MonitorSetupError` for a name that names no server.  Sampling a server could not
    switch back off after a test (it did not answer) is switched off after the next
    checked test, or by `close`.
    """

    def __init__(self, servers: Sequence[str], *, timeout: float = HEALTH_TIMEOUT) -> None:
        self._names = tuple(servers)
        self._timeout = timeout
        """Seconds a server has to answer a poll."""
        self._collector: Collector | None = None
        self._left_on: dict[str, MonitoredServer] = {}
        """Servers where this checker switched sampling on and could not switch it off."""

    def begin(self) -> Baseline:
        """Turn sampling on where it is off, and take the poll a test's end compares
        with."""
        collector = self._servers()
        first = self._poll(collector)
        off = [
            reply.server
            for reply in first.replies
            if reply.snapshot is not None and not reply.snapshot.perf_monitoring
        ]
        switched = (*off, *(s for s in self._left_on.values() if s not in off))
        self._set_sampling(collector, switched, True)
        return Baseline(self._poll(collector), switched)

    def end(self, baseline: Baseline) -> Checkup:
        """Take the poll after the test, switch off the sampling `begin` switched on, and
        compare with the ``baseline``."""
        collector = self._servers()
        try:
            after = self._poll(collector)
        finally:
            failed = self._set_sampling(collector, baseline.switched, False)
        analysis = Analysis()
        analysis.add(baseline.poll)
        update = analysis.add(after)
        left_on = tuple(
            f"Performance sampling is still on in {admin}, which did not answer ({error}); "
            "it is switched off after the next checked test, or when the session ends."
            for admin, error in failed.items()
        )
        return Checkup(update, _missed(update), _errors(update), left_on)

    def close(self) -> None:
        """Switch off the sampling left on after a test, where the server answers now,
        and stop the collector's threads."""
        if self._collector is None:
            return
        try:
            if self._left_on:
                self._set_sampling(self._collector, tuple(self._left_on.values()), False)
        finally:
            self._collector.close()

    def _servers(self) -> Collector:
        """The collector of the named servers, made at the first call."""
        if self._collector is None:
            if not hasattr(tango.ApiUtil, "query_event_system"):
                raise MonitorSetupError(
                    "the health check needs PyTango 10.3 or newer, which can query its own "
                    f"event system; this is PyTango {tango.__version__}: install pytango>=10.3"
                )
            selection = select_servers(self._names) if self._names else None
            servers = () if selection is None else selection.servers
            self._collector = Collector(servers, timeout=self._timeout)
        return self._collector

    def _poll(self, collector: Collector) -> Poll:
        """This process and every server, as one poll."""
        servers = collector.poll()
        process = process_reply(process_name())
        return Poll(datetime.now().astimezone(), (process, *servers.replies))

    def _set_sampling(
        self, collector: Collector, servers: Sequence[MonitoredServer], enabled: bool
    ) -> dict[str, CallError]:
        """Switch sampling in ``servers`` (this process among them, maybe) to ``enabled``;
        the servers that did not answer, by admin device, with why.  Those left on after
        switching off are kept in ``_left_on`` until a later attempt succeeds."""
        me = process_name().admin
        if any(server.admin == me for server in servers):
            set_process_perf_monitoring(enabled)
        others = [server for server in servers if server.admin != me]
        failed = (
            collector.set_perf_monitoring(enabled, others, patience=collector.call_limit)
            if others
            else {}
        )
        if not enabled:
            for server in others:
                if server.admin in failed:
                    self._left_on[server.admin] = server
                else:
                    self._left_on.pop(server.admin, None)
        return failed


def _missed(update: PollUpdate) -> tuple[str, ...]:
    """Each subscription whose missed count rose during the test, or that was made
    during it and counts missed events."""
    lines = []
    for entry in update.report.entries:
        if entry.report is None:
            continue
        rises = [
            (change.topic, change.missed_event_count.delta)
            for change in entry.report.subscription_changes
            if change.missed_event_count is not None
        ]
        rises += [(new.topic, new.missed_event_count) for new in entry.report.new_subscriptions]
        lines += [
            f"{entry.server.admin}: {stream_of_topic(topic)} missed events {count} time(s)"
            for topic, count in rises
            if count > 0
        ]
    return tuple(lines)


def _errors(update: PollUpdate) -> tuple[str, ...]:
    """The findings of severity error, one line each, but for missed-events: `_missed`
    lists those, with the subscriptions made during the test, which no finding covers."""
    return tuple(
        f"{finding.kind} ({finding.subject}): {finding.message}"
        for finding in update.findings.active
        if finding.severity >= Severity.ERROR and finding.kind != "missed-events"
    )
