"""What one test changed in its own process's event system (``event_system_change``)."""

from __future__ import annotations

from milonga.monitor import Report, Snapshot, diff, query_process, render_report


class EventSystemChange:
    """This process's event system when the test started, and what has changed since.

    Every method queries the process again and compares with `before`, the snapshot
    taken when the fixture was set up.  A query empties the process's performance
    samples, so a report's tables cover the time since the previous query.
    """

    def __init__(self) -> None:
        self.before: Snapshot = query_process()

    def snapshot(self) -> Snapshot:
        """The process's event system now."""
        return query_process()

    def report(self) -> Report:
        """What changed since the test started: subscriptions, counters, samples."""
        return diff(self.before, query_process())

    def render(self) -> str:
        """`report` as text, in the layout the monitor prints."""
        return "\n".join(render_report(self.report()))
