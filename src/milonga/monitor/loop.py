"""The monitor's poll loop, the one `tango-event-monitor` and the demo's live monitor run.

`PollLoop` takes a poll every period on one `Cadence` grid, turns each into a `PollUpdate`
(the poll, what changed since each server's previous answer, and the findings), and hands
that to its outputs: anything with a ``write(update)`` method (`Output`).  With sampling it
turns performance sampling on at the start, on again in a server that answers with it off
(saying why it was off), and off again however the loop ends, after one last poll that
shows the samples taken since the one before.

Stop signals never lose a reply: one that arrives during a poll lets that poll reach every
output and then acts, which makes it the last.  Only the thread that owns the signals (the
main thread) handles them; a loop on another thread ends when `PollLoop.stop` is called.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from types import FrameType

import tango

from milonga.monitor.analysis import Analysis
from milonga.monitor.collector import (
    PERF_COMMAND,
    QUERY_COMMAND,
    REQUIRED_TANGO,
    CallError,
    Collector,
    MonitorSetupError,
    Selection,
)
from milonga.monitor.outputs import Output, OutputError, Screen, send
from milonga.monitor.poll import RESOLVE_SECONDS, Cadence, MonitoredServer, Poll
from milonga.tango_errors import root_cause
from milonga.terminated import STOP_SIGNALS, Handler, Terminated, handling

Say = Callable[[str, str], None]
"""Tells the user something: ``say(kind, text)``, kind being note, warning or error."""


class PollLoop:
    """Polls ``collector``'s servers every ``period`` seconds and sends each poll to
    ``outputs``, in order, then to ``screen``.

    Stop signals are held back while the outputs write, except during the ``screen``'s
    write: a terminal or a pipe can block it for as long as its reader pleases (`| less`
    at a page), so a signal acts at once there.  The loop ends after ``count`` polls if
    given, on a stop signal, on `stop`, or when an output fails.

    With ``sampling``, performance sampling is on in every server while the loop runs
    (see `run`); ``prog`` names the command that turns it off by hand, in the warning for
    a server where the loop could not.  ``say`` tells the user about sampling, about
    polls that overran the period and about the servers polled.

    With ``resolve``, the servers to poll are looked up again every ``resolve_period``
    seconds: ``resolve()`` runs in the collector's database thread (`Collector.
    submit_lookup`), so that no poll waits for it, and its `Selection` takes effect at the
    next poll after it has ended.  New servers are polled (sampling is turned on in each
    at its first answer, as in a restarted one), servers gone are dropped (sampling is
    turned off in them, without waiting), each said as a note; a pattern that no longer
    matches anything is a warning.  A failing ``resolve`` is a warning, and the servers
    stay as they are.  Without it, the collector's servers are polled throughout.

    A server gone in which sampling may be on stays in the loop's care until it has
    answered the call that turns sampling off: that call is made again at each poll
    while it has not, and once more at the end, with the others.

    Servers whose admin devices are not in ``required`` (all are, when it is None), nor
    in the `Selection.named` of a lookup, are left out once found without
    `QueryEventSystem` (`leave_out`), at their first answer, with a warning each, and are
    not polled again for the rest of the loop even if a lookup selects them again.
    """

    def __init__(
        self,
        collector: Collector,
        outputs: Sequence[Output],
        *,
        period: float,
        count: int | None = None,
        sampling: bool = False,
        screen: Screen | None = None,
        say: Say,
        prog: str,
        resolve: Callable[[], Selection] | None = None,
        resolve_period: float = RESOLVE_SECONDS,
        required: Collection[str] | None = None,
    ) -> None:
        self.collector = collector
        self.outputs = tuple(outputs)
        self.period = period
        self.count = count
        self.sampling = sampling
        self.screen = screen
        self._say = say
        self.prog = prog
        self._analysis = Analysis()
        self._stop = threading.Event()
        self._last_poll_wanted = True  # until a poll that ends the loop says otherwise
        self._answered: set[str] = set()  # admin devices that have answered a poll
        self._turned_on: set[str] = set()  # admin devices in which sampling may be on
        self._gone: dict[str, MonitoredServer] = {}  # servers gone, sampling maybe on
        self._required = required
        self._left_out: set[str] = set()  # admin devices of servers left out
        # By admin device: the process in which sampling was last turned on, if known.
        self._processes: dict[str, str | None] = {}
        self.resolve = resolve
        self.resolve_period = resolve_period
        self._resolving: Future[Selection] | None = None
        self._next_resolution = time.monotonic() + resolve_period

    def run(
        self, on_sampling_failed: Callable[[Mapping[str, CallError]], None] | None = None
    ) -> None:
        """Poll until the loop ends (see the class), and turn sampling off again.

        With sampling, it is turned on in every server first; ``on_sampling_failed`` is
        then called with the servers in which that failed, if any, and may raise to end
        the loop before its first poll.  However the loop ends, sampling is then turned
        off in every server in which it may be on, with a warning for each where that
        fails.  Before that, one last poll shows the samples taken since the poll before,
        unless that poll ended the loop (the ``count``-th, or one a stop came during), the
        screen takes nothing more, or ``stop(last_poll=False)`` was called.

        Raises KeyboardInterrupt or `Terminated` on a stop signal, BrokenPipeError when
        the screen's reader went away, `OutputError` (said first) when an output failed.
        """
        try:
            if self.sampling:
                failures = self._turn_sampling_on(self.collector.servers)
                if failures and on_sampling_failed is not None:
                    try:
                        on_sampling_failed(failures)
                    except BaseException:
                        self._last_poll_wanted = False  # before any poll: nothing to show
                        raise
            self._loop()
        except OutputError as error:
            self._say("error", str(error))
            raise
        finally:
            if self._resolving is not None:
                self._resolving.cancel()  # one under way is left to end: close waits for it
            if self.sampling:
                # A further signal must not leave sampling on: only the last poll, and the
                # wait for servers that do not answer, heed it.
                with handling(dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)) as handlers:
                    if self._last_poll_wanted and not (self.screen and self.screen.closed):
                        self._last_poll(handlers)
                    self._turn_sampling_off(handlers)

    def stop(self, *, last_poll: bool = True) -> None:
        """End `run`, from any thread: at once if it waits between polls, otherwise once
        the poll under way has reached the outputs (that poll is then the last).  With
        ``last_poll`` False, no last poll is taken before sampling is turned off."""
        if not last_poll:
            self._last_poll_wanted = False
        self._stop.set()

    def _loop(self) -> None:
        """Take a poll every period until the loop ends, on one grid of times; say so when
        one takes so long that the next is late."""
        cadence = Cadence(self.period, time.monotonic())
        taken = 0
        while True:
            due = cadence.due  # a wait that overran counts too: it makes the next late
            poll = self._snapshot()
            taken += 1
            if taken == self.count or self._stop.is_set():
                self._last_poll_wanted = False  # that one was the last
                return
            ended = time.monotonic()
            wait, late = cadence.next(ended)
            if late:
                took = ended - due
                self._say("warning", late_warning(poll.time.isoformat(), took, self.period, late))
            if self._stop.wait(wait):
                return

    def _snapshot(self) -> Poll:
        """Take a poll and send it to the outputs.  A stop signal during the poll waits
        until they have it, which makes it the last poll: no reply is lost to the signal."""
        self._follow_selection()
        if self.sampling and self._gone:
            self._turn_gone_off()
        with _holding_signals() as (arrived, _):
            poll = self._without_lacking(self.collector.poll())
        self._record(poll)
        if arrived:
            self._last_poll_wanted = False
        _act_on(arrived)
        if self.sampling:
            self._keep_perf_on(poll)
        self._answered.update(
            reply.server.admin for reply in poll.replies if reply.snapshot is not None
        )
        return poll

    def leave_out(self, servers: Iterable[MonitoredServer]) -> None:
        """Stop polling ``servers``, found without `QueryEventSystem`, for good; warn
        about each."""
        left = {s.admin: s for s in servers if s.admin not in self._left_out}
        if not left:
            return
        self._left_out.update(left)
        self.collector.set_servers(
            [s for s in self.collector.servers if s.admin not in left], keep=self._gone
        )
        for server in left.values():
            self._say(
                "warning",
                f"leaving {server.label} out: its device server has no {QUERY_COMMAND} command, "
                f"which needs {REQUIRED_TANGO}; upgrade it and restart the monitor to poll it",
            )

    def _without_lacking(self, poll: Poll) -> Poll:
        """``poll`` without the replies of the servers found lacking `QueryEventSystem`
        that may be left out, which `leave_out` leaves out."""
        lacking = self.collector.lacking
        left = [
            reply.server
            for reply in poll.replies
            if reply.server.admin in lacking and not self._is_required(reply.server.admin)
        ]
        if not left:
            return poll
        self.leave_out(left)
        admins = {server.admin for server in left}
        return Poll(poll.time, tuple(r for r in poll.replies if r.server.admin not in admins))

    def _is_required(self, admin: str) -> bool:
        """Whether the server of ``admin`` must be polled even without the query command."""
        return self._required is None or admin in self._required

    def _follow_selection(self) -> None:
        """Take the servers of a lookup that has ended, and start the next one when due."""
        if self.resolve is None:
            return
        if self._resolving is not None and self._resolving.done():
            self._adopt(self._resolving)
            self._resolving = None
        now = time.monotonic()
        if self._resolving is None and now >= self._next_resolution:
            self._next_resolution = now + self.resolve_period
            self._resolving = self.collector.submit_lookup(self.resolve)

    def _adopt(self, resolving: Future[Selection]) -> None:
        """Poll the servers that ``resolving`` found from now on, and say what changed."""
        try:
            selection = resolving.result()
        except (MonitorSetupError, tango.DevFailed) as error:
            reason = root_cause(error) if isinstance(error, tango.DevFailed) else str(error)
            self._say(
                "warning",
                f"could not look up the servers to poll again ({reason}); still polling "
                f"the same {len(self.collector.servers)} server(s), and looking again in "
                f"{self.resolve_period:g} s",
            )
            return
        if self._required is not None:  # None: every server is required throughout
            self._required = selection.named
        before = self.collector.servers
        chosen = [s for s in selection.servers if s.admin not in self._left_out]
        admins = {server.admin for server in chosen}
        gone = [server for server in before if server.admin not in admins]
        known = {server.admin for server in before}
        added = [server for server in chosen if server.admin not in known]
        matched_before = {name for server in before for name in server.devices}
        turned_on = {server.admin for server in gone} & self._turned_on
        self._gone.update((server.admin, server) for server in gone if server.admin in turned_on)
        for admin in admins:
            self._gone.pop(admin, None)  # polled again: in the loop's care as any other
        self.collector.set_servers(chosen, keep=self._gone)
        self._tell_changes(added, gone, turned_on)
        for pattern in selection.unmatched:
            if pattern in matched_before:
                self._say(
                    "warning",
                    f"{pattern!r} matches no exported device any more; it is looked up "
                    f"again every {self.resolve_period:g} s",
                )

    def _tell_changes(
        self,
        added: Sequence[MonitoredServer],
        gone: Sequence[MonitoredServer],
        turned_on: set[str],
    ) -> None:
        """Say which servers are polled from now on, and which no longer (and that
        sampling is being turned off in those of ``turned_on``)."""
        for server in added:
            self._say("note", f"polling {server.label} from now on: it is newly selected")
        for server in gone:
            off = "; turning performance sampling off in it" if server.admin in turned_on else ""
            self._say(
                "note",
                f"no longer polling {server.label}: it is no longer selected (gone from the "
                f"database, or no longer exported){off}",
            )

    def _record(self, poll: Poll) -> None:
        """Send ``poll``, with what changed and the findings, to the outputs, then to the
        screen, and only then raise the first output's failure (`send`).  A signal waits
        until all have it, unless it arrives while the screen is being written: that may
        be blocked, so the signal acts at once, and a screen that takes nothing more gets
        nothing more."""
        with _deferring_signals() as handlers:
            failure = send(self._analysis.add(poll), self.outputs, self.screen, handlers)
        if failure is not None:
            raise failure

    def _keep_perf_on(self, poll: Poll) -> None:
        """Turn sampling on again in servers that answer with it off, and say why it was
        off: each answers for the first time, restarted, or another client turned it off."""
        off = [
            reply.server
            for reply in poll.replies
            if reply.snapshot is not None and reply.snapshot.perf_monitoring is False
        ]
        before = {server.admin: self._processes.get(server.admin) for server in off}
        failures = self._turn_sampling_on(off)
        for server in off:
            if server.admin not in failures:
                self._say("note", self._why_off(server, before[server.admin]))

    def _why_off(self, server: MonitoredServer, before: str | None) -> str:
        """Why sampling was off in ``server``, just turned on again; ``before`` is the
        process it was turned on in the last time, if known.  Only a change of process
        tells a restart: turning sampling off, or querying, is what any client may do."""
        if server.admin not in self._answered:
            return (
                f"turned performance sampling on in {server.label}, which answers for the "
                "first time"
            )
        now = self._processes.get(server.admin)
        if before is None or now is None:
            return (
                f"performance sampling was off in {server.label}: it restarted, or another "
                "client turned it off; turned it on again"
            )
        if before != now:
            return (
                f"performance sampling was off in {server.label}, which restarted ({before} "
                f"before, {now} now); turned it on again"
            )
        return (
            f"performance sampling was turned off in {server.label} by another client, "
            f"such as another monitor stopping (the server is still {now}); turned it on "
            "again"
        )

    def _turn_sampling_on(self, servers: Sequence[MonitoredServer]) -> dict[str, CallError]:
        """Turn sampling on in ``servers``; return the failures by admin device.  The
        processes of those that did are recorded, and each server in which it may be on is
        turned off again at the end."""
        self._turned_on.update(server.admin for server in servers)  # before asking: any exit
        errors = self.collector.set_perf_monitoring(True, servers)
        self._turned_on.difference_update(
            admin for admin, error in errors.items() if error.answered or not error.sent
        )
        on = [server for server in servers if server.admin not in errors]
        self._processes.update(self.collector.processes(on))
        return errors

    def _turn_gone_off(self) -> None:
        """Turn sampling off in the servers gone in which it may be on, without waiting
        for a call under way; those that answer leave the loop's care, with a warning
        for each that answered with an error."""
        errors = self.collector.set_perf_monitoring(False, list(self._gone.values()))
        done = [admin for admin in self._gone if admin not in errors or errors[admin].answered]
        for admin in done:
            del self._gone[admin]
            self._turned_on.discard(admin)
        self._warn_left_on({a: e for a, e in errors.items() if e.answered})

    def _turn_sampling_off(self, handlers: dict[int, Handler]) -> None:
        """Turn sampling off in every server in which it may be on, and warn about each
        where that fails.  Those that do not answer at once are waited for, up to the
        collector's `Collector.call_limit` (5 s with the 1 s timeout): their calls under
        way have ended then, so the whole stop fits well within the 10 s that service
        managers allow before SIGKILL.  A signal that ``handlers`` act on ends the wait."""
        servers = [s for s in self.collector.servers if s.admin in self._turned_on]
        servers += self._gone.values()
        errors = self.collector.set_perf_monitoring(False, servers)
        slow = [s for s in servers if s.admin in errors and not errors[s.admin].answered]
        if slow:
            patience = self.collector.call_limit
            with contextlib.suppress(KeyboardInterrupt, Terminated), handling(handlers):
                self._say(
                    "note",
                    f"waiting up to {patience:g} s for "
                    f"{', '.join(server.label for server in slow)} to answer, to turn "
                    f"performance sampling off in {'it' if len(slow) == 1 else 'them'}; "
                    "Ctrl-C stops waiting",
                )
                late = self.collector.set_perf_monitoring(False, slow, patience=patience)
                errors = {admin: error for admin, error in errors.items() if error.answered}
                errors.update(late)
        self._warn_left_on(errors)

    def _last_poll(self, handlers: dict[int, Handler]) -> None:
        """Show the samples taken since the last poll before sampling is turned off.
        ``handlers`` act on signals meanwhile: a further one skips it."""
        try:
            with handling(handlers):
                self._record(self.collector.poll())
        except (KeyboardInterrupt, Terminated, BrokenPipeError):
            pass
        except OutputError as error:
            self._say("error", str(error))

    def _warn_left_on(self, failures: Mapping[str, CallError]) -> None:
        """Name each server in which sampling could not be turned off, and the remedy."""
        for admin, failure in failures.items():
            self._say(
                "warning",
                f"could not turn performance sampling off in {admin} ({failure}); if that "
                "server still runs, sampling may stay on in it. Once it answers, run "
                f"'{self.prog} {admin} --monitor --count 1' or call {PERF_COMMAND}(False) on "
                f"{admin}",
            )


def late_warning(when: str, took: float, period: float, late: float) -> str:
    """What to say about the poll of ``when``, which ended ``took`` seconds after it was
    due, more than the polling ``period``: the next one is ``late`` seconds late.

    Times are shown to the millisecond, ``took`` always at least one more than
    ``period``, so that the two never read as equal.
    """
    period_ms = round(period * 1000)
    took_ms = max(round(took * 1000), period_ms + 1)
    return (
        f"the snapshot of {when} took {_seconds(took_ms)} s, longer than the "
        f"{_seconds(period_ms)} s polling period: the next one is "
        f"{_seconds(round(late * 1000))} s late"
    )


def _seconds(milliseconds: int) -> str:
    """``milliseconds`` as seconds, without trailing zeros: 1000 is 1, 1250 is 1.25."""
    return f"{milliseconds / 1000:.3f}".rstrip("0").rstrip(".")


@contextlib.contextmanager
def _holding_signals() -> Iterator[tuple[list[int], dict[int, Handler]]]:
    """Hold stop signals back inside the block; yield the list of those that arrive, and
    the handlers that act on them, for parts of the block that must not wait."""
    arrived: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    active = {signum for signum in STOP_SIGNALS if signal.getsignal(signum) != signal.SIG_IGN}
    with handling(dict.fromkeys(active, remember)) as handlers:
        yield arrived, handlers


def _act_on(arrived: list[int]) -> None:
    """Act on stop signals held back: Ctrl-C alone raises KeyboardInterrupt, any other
    `Terminated`."""
    if arrived:
        raise KeyboardInterrupt if set(arrived) == {signal.SIGINT} else Terminated


@contextlib.contextmanager
def _deferring_signals() -> Iterator[dict[int, Handler]]:
    """Hold stop signals back until the block is done, then act on them; yield the
    handlers that act on them, for parts of the block that must not wait."""
    with _holding_signals() as (arrived, handlers):
        yield handlers
    _act_on(arrived)
