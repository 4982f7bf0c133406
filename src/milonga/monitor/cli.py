"""`tango-event-monitor` (also `milonga monitor`): poll QueryEventSystem, print what changed."""

from __future__ import annotations

import argparse
import contextlib
import select
import signal
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TextIO

from milonga import standard_streams
from milonga.monitor.collector import (
    PERF_COMMAND,
    CallError,
    Collector,
    MonitorSetupError,
    resolve_servers,
)
from milonga.monitor.jsonl import JsonLinesWriter, poll_record
from milonga.monitor.poll import Cadence, MonitoredServer, Poll, PollHistory
from milonga.monitor.render import render_poll
from milonga.monitor.stats import SAMPLE_LIMIT
from milonga.terminated import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    STOP_SIGNALS,
    Handler,
    Terminated,
    handling,
    raising,
)

PROG = "tango-event-monitor"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_PERIOD_SECONDS = 10.0
MIN_PERIOD_SECONDS = 0.1
"""Ten queries a second per server at most: see `PERIOD_REASON`."""
PERIOD_REASON = (
    "each query holds up subscriptions in the server for a moment, and "
    f"{MIN_PERIOD_SECONDS:g} s already collects every performance sample up to "
    f"{SAMPLE_LIMIT / MIN_PERIOD_SECONDS:.0f} events a second"
)
MAX_PERIOD_SECONDS = 86400.0
STANDARD_OUTPUT = "-"
"""The FILE of --output that means standard output."""

SAMPLES_WARNING = (
    "performance samples go to whichever client queries a server first, and each query "
    "empties them: two monitors polling one server each see only part of its samples"
)

DESCRIPTION = textwrap.fill(
    "Poll the QueryEventSystem admin command of the device servers running DEVICE... "
    "every polling period and print what changed in their Tango event systems since the "
    "previous snapshot. Each DEVICE is a device name, alias, admin device (dserver/...) or "
    "full TRL; devices of one server are watched as one entry.",
    width=88,
)

EPILOG = f"""\
output:
  Every snapshot opens and closes with a '=' rule carrying its time. Each server then
  gets a '-' rule with its admin device and the devices that led to it, followed only by
  sections that have something to show: publishers (the last server counter pushed on
  each stream), subscriptions (events processed, last server counter received,
  callbacks, missed and discarded events), each new, changed as 'before -> after
  (difference)' or removed, plus subscriptions waiting to connect and servers not
  answering. With --monitor, tables give event gaps, push, sleep and processing times,
  latency, callbacks and wake-ups as mean±standard error, median, count, minimum,
  maximum and 1/10/90/99% percentiles (10/90% from 10 samples, 1/99% from 100).

note:
{textwrap.indent(textwrap.fill(SAMPLES_WARNING.capitalize() + ".", width=86), "  ")}

exit status:
  0 after --count snapshots, 1 if the output cannot be written (standard output or
  error closed, FILE or the screen failing), 2 for bad arguments or devices, 130 after
  Ctrl-C, 143 after SIGTERM or SIGHUP.
"""


def _period(text: str) -> float:
    """A polling period: from `MIN_PERIOD_SECONDS` to a day."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not MIN_PERIOD_SECONDS <= value <= MAX_PERIOD_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds from {MIN_PERIOD_SECONDS:g} to "
            f"{MAX_PERIOD_SECONDS:g} (one day), got {text!r}; give a period in seconds such "
            f"as 10 ({PERIOD_REASON})"
        )
    return value


def _file_name(text: str) -> str:
    """A file name for --output: not empty; `STANDARD_OUTPUT` means standard output."""
    if not text:
        raise argparse.ArgumentTypeError(
            "expected a file name, got an empty one; give the file to write, '-' for "
            "standard output, or leave out -o"
        )
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The monitor's options, shared by `tango-event-monitor` and `milonga monitor`."""
    parser.add_argument(
        "devices",
        nargs="+",
        metavar="DEVICE",
        help="a device, alias, admin device (dserver/Executable/instance) or full TRL",
    )
    parser.add_argument(
        "--polling-period",
        "--poll-period",
        dest="polling_period",
        type=_period,
        default=DEFAULT_PERIOD_SECONDS,
        metavar="SECONDS",
        help=f"time between snapshots, from {MIN_PERIOD_SECONDS:g} to {MAX_PERIOD_SECONDS:g} "
        f"(default: %(default)g); {PERIOD_REASON}",
    )
    parser.add_argument(
        "-m",
        "--monitor",
        "--monitor-perf",
        dest="monitor",
        action="store_true",
        help="turn on the servers' event-system performance sampling while running and show "
        "statistics of the samples; it is turned off again however the monitor stops",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=_file_name,
        metavar="FILE",
        help='also write each snapshot to FILE as one JSON line: {"time": ..., "replies": '
        '{ADMIN: {"data": QueryEventSystem reply} or {"error": text}}}. With "-o -" the '
        "lines go to standard output instead of the text snapshots (a file named - is ./-)",
    )
    parser.add_argument(
        "-a",
        "--append",
        action="store_true",
        help="add to the end of FILE instead of replacing it",
    )
    parser.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="stop after N snapshots (default: run until Ctrl-C)",
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tango-event-monitor` and return its exit status."""
    return run(build_parser().parse_args(argv), PROG)


def run(
    args: argparse.Namespace,
    prog: str = PROG,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Monitor as ``args`` (from `add_arguments`) ask, writing to ``out`` and ``err``
    (default: standard output and error, which must be open: exit status 1 otherwise).
    Characters their encodings lack (μ and ± under Latin-1) come out as backslash escapes.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if not standard_streams.usable(prog, out, err):
        return EXIT_FAILED
    try:
        with handling(raising()):
            return _run(args, prog, out, err)
    except MonitorSetupError as error:
        print(f"{prog}: error: {error}", file=err, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED


def _run(args: argparse.Namespace, prog: str, out: TextIO, err: TextIO) -> int:
    if args.append and not args.output:
        raise MonitorSetupError("--append adds to the file of --output; give -o FILE as well")
    with Collector(resolve_servers(args.devices)) as collector:
        for server in collector.check_support():
            print(
                f"{prog}: warning: {server.label} does not answer yet; it is polled all the "
                "same and reported once it answers",
                file=err,
                flush=True,
            )
        try:
            to_file = args.output not in {None, STANDARD_OUTPUT}
            writer = JsonLinesWriter(args.output, append=args.append) if to_file else None
        except OSError as error:
            raise MonitorSetupError(
                f"cannot write to {args.output} ({error.strerror}); give a file in a "
                "writable directory"
            ) from None
        with writer or contextlib.nullcontext():
            session = _Session(collector, args, writer=writer, out=out, err=err, prog=prog)
            return session.run()


def late_warning(when: str, took: float, period: float, late: float) -> str:
    """What to say about the snapshot of ``when``, which ended ``took`` seconds after it
    was due, more than the polling ``period``: the next one is ``late`` seconds late.

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


class _OutputError(Exception):
    """The screen or the file of --output cannot be written; the message says which and
    what to do."""


class _Session:
    """One run of the monitor: the polling loop and the clean-up every exit path needs."""

    def __init__(
        self,
        collector: Collector,
        args: argparse.Namespace,
        *,
        writer: JsonLinesWriter | None,
        out: TextIO,
        err: TextIO,
        prog: str,
    ) -> None:
        self.collector = collector
        self.args = args
        self.writer = writer
        self.out = out
        self.err = err
        self.prog = prog
        self.history = PollHistory()
        self.output_closed = False
        self.last_shown = False  # a stop signal came during the poll just shown
        self.answered: set[str] = set()  # admin devices that have answered a poll
        self.sampling: set[str] = set()  # admin devices in which sampling may be on
        # By admin device: the process in which sampling was last turned on, if known.
        self.processes: dict[str, str | None] = {}

    def run(self) -> int:
        """Poll until --count snapshots or a signal, and return the exit status.  However
        it stops, sampling turned on by --monitor is turned off again, with a warning for
        each server where that fails."""
        status = EXIT_OK
        finished = False
        try:
            if self.args.monitor:
                self._say("note", SAMPLES_WARNING)
                self._turn_sampling_on(self.collector.servers)
            self._loop()
            finished = True
        except KeyboardInterrupt:
            status = EXIT_INTERRUPTED
        except Terminated:
            status = EXIT_TERMINATED
        except BrokenPipeError:  # the reader went away (`| head`): nobody to tell
            status = EXIT_FAILED
        except _OutputError as error:
            self._say("error", str(error))
            status = EXIT_FAILED
        finally:
            if self.args.monitor:
                # A further signal must not leave sampling on: only the last poll, and the
                # wait for servers that do not answer, heed it.
                with handling(dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)) as handlers:
                    if not (finished or self.last_shown or self.output_closed):
                        self._last_poll(handlers)
                    self._turn_sampling_off(handlers)
        return status

    def _loop(self) -> None:
        """Take a snapshot every polling period until --count of them, on one grid of
        times; say so when one takes so long that the next is late."""
        period = self.args.polling_period
        count = self.args.count
        cadence = Cadence(period, time.monotonic())
        polls = 0
        while True:
            due = cadence.due  # a sleep that overran counts too: it makes the next late
            poll = self._snapshot()
            polls += 1
            if count is not None and polls >= count:
                return
            ended = time.monotonic()
            wait, late = cadence.next(ended)
            if late:
                self._say("warning", late_warning(poll.time.isoformat(), ended - due, period, late))
            time.sleep(wait)

    def _snapshot(self) -> Poll:
        """Take a snapshot and show it.  A stop signal during the poll waits until it is
        shown, which makes it the last snapshot: no reply is lost to the signal."""
        with _holding_signals() as (arrived, _):
            poll = self.collector.poll()
        self._record(poll)
        self.last_shown = bool(arrived)
        _act_on(arrived)
        if self.args.monitor:
            self._keep_perf_on(poll)
        self.answered.update(
            reply.server.admin for reply in poll.replies if reply.snapshot is not None
        )
        return poll

    def _record(self, poll: Poll) -> None:
        """Write ``poll`` to the file, then to the screen, and only then report a file that
        failed.  A signal waits until both have it, unless it arrives while the screen is
        being written: that may be blocked (`| less` at a page), so the signal acts at
        once, and a screen that takes nothing more gets nothing more."""
        with _deferring_signals() as handlers:
            failure = self._write_file(poll)
            with handling(handlers):
                self._write_screen(self._screen_text(poll))
        if failure is not None:
            raise failure

    def _screen_text(self, poll: Poll) -> str:
        """The text snapshot of ``poll``, or its JSON line with ``-o -``."""
        if self.args.output == STANDARD_OUTPUT:
            return poll_record(poll) + "\n"
        return render_poll(self.history.add(poll))

    def _write_file(self, poll: Poll) -> _OutputError | None:
        """Write ``poll`` to the file of --output, if any; return the error to report if
        that fails, after which the file gets nothing more."""
        if self.writer is None:
            return None
        try:
            self.writer.write(poll)
        except OSError as error:
            self.writer = None  # said once; the screen goes on
            return _OutputError(
                f"cannot write to {self.args.output} ({error.strerror}); snapshots are no "
                "longer written to it. Make sure it can be written (free space, a working "
                "disk) or give another file with -o"
            )
        return None

    def _write_screen(self, text: str) -> None:
        """Write ``text`` to the screen.  A signal meanwhile sends the rest of the screen
        output nowhere if the screen takes nothing more (a full pipe): a later write would
        block too.  Arriving just after the text went out, it leaves the screen as it is."""
        try:
            self.out.write(text)
            self.out.flush()
        except (KeyboardInterrupt, Terminated):
            if _stuck(self.out):
                self._close_output()
            raise
        except BrokenPipeError:
            self._close_output()
            raise
        except OSError as error:
            self._close_output()
            raise _OutputError(
                f"cannot write to standard output ({error.strerror}); send it somewhere "
                "that takes it, such as a file or a pipe"
            ) from None

    def _keep_perf_on(self, poll: Poll) -> None:
        """Turn sampling on again in servers that answer with it off, and say why it was
        off: each answers for the first time, restarted, or another client turned it off."""
        off = [
            reply.server
            for reply in poll.replies
            if reply.snapshot is not None and reply.snapshot.perf_monitoring is False
        ]
        before = {server.admin: self.processes.get(server.admin) for server in off}
        for server in self._turn_sampling_on(off):
            self._say("note", self._why_off(server, before[server.admin]))

    def _why_off(self, server: MonitoredServer, before: str | None) -> str:
        """Why sampling was off in ``server``, just turned on again; ``before`` is the
        process it was turned on in the last time, if known.  Only a change of process
        tells a restart: turning sampling off, or querying, is what any client may do."""
        if server.admin not in self.answered:
            return (
                f"turned performance sampling on in {server.label}, which answers for the "
                "first time"
            )
        now = self.processes.get(server.admin)
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

    def _turn_sampling_on(self, servers: Sequence[MonitoredServer]) -> list[MonitoredServer]:
        """Turn sampling on in ``servers``; return those that did, whose processes are
        recorded.  Each server in which it may be on is turned off again at exit."""
        self.sampling.update(server.admin for server in servers)  # before asking: any exit
        errors = self.collector.set_perf_monitoring(True, servers)
        self.sampling.difference_update(
            admin for admin, error in errors.items() if error.answered or not error.sent
        )
        on = [server for server in servers if server.admin not in errors]
        self.processes.update(self.collector.processes(on))
        return on

    def _turn_sampling_off(self, handlers: dict[int, Handler]) -> None:
        """Turn sampling off in every server in which it may be on, and warn about each
        where that fails.  Those that do not answer at once are waited for, up to the
        collector's `Collector.call_limit` (5 s with the 1 s timeout): their calls under
        way have ended then, so the whole stop fits well within the 10 s that service
        managers allow before SIGKILL.  A signal that ``handlers`` act on ends the wait."""
        servers = [server for server in self.collector.servers if server.admin in self.sampling]
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
        """Show the samples taken since the last snapshot before sampling is turned off.
        ``handlers`` act on signals meanwhile: a further one skips it."""
        try:
            with handling(handlers):
                self._record(self.collector.poll())
        except (KeyboardInterrupt, Terminated, BrokenPipeError):
            pass
        except _OutputError as error:
            self._say("error", str(error))

    def _warn_left_on(self, failures: dict[str, CallError]) -> None:
        """Name each server in which sampling could not be turned off, and the remedy."""
        for admin, failure in failures.items():
            self._say(
                "warning",
                f"could not turn performance sampling off in {admin} ({failure}); if that "
                "server still runs, sampling may stay on in it. Once it answers, run "
                f"'{self.prog} {admin} --monitor --count 1' or call {PERF_COMMAND}(False) on "
                f"{admin}",
            )

    def _say(self, kind: str, text: str) -> None:
        print(f"{self.prog}: {kind}: {text}", file=self.err, flush=True)

    def _close_output(self) -> None:
        """Send the rest of the screen output, buffered text included, nowhere."""
        self.output_closed = True
        standard_streams.discard(self.out)


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


def _stuck(stream: TextIO) -> bool:
    """Whether a write to ``stream`` would block now, as to a pipe nobody reads (`| less`
    waiting at a page); a stream without a file descriptor never blocks."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):
        return False
    _, writable, _ = select.select([], [descriptor], [], 0)
    return not writable


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


if __name__ == "__main__":
    sys.exit(main())
