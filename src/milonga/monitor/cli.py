"""`tango-event-monitor` (also `milonga monitor`): poll QueryEventSystem, print what changed."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TextIO

from milonga import standard_streams
from milonga.monitor.collector import PERF_COMMAND, Collector, MonitorSetupError, resolve_servers
from milonga.monitor.jsonl import JsonLinesWriter
from milonga.monitor.poll import Poll, PollHistory
from milonga.monitor.render import render_poll
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
MAX_PERIOD_SECONDS = 86400.0

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
    """A polling period: more than 0 seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_PERIOD_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_PERIOD_SECONDS:g} (one "
            f"day), got {text!r}; give a period in seconds such as 10"
        )
    return value


def _file_name(text: str) -> str:
    """A file name for --output: not empty."""
    if not text:
        raise argparse.ArgumentTypeError(
            "expected a file name, got an empty one; give the file to write, or leave out -o"
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
        help="time between snapshots (default: %(default)g). Each query briefly holds up "
        "subscriptions in the server, so do not poll much faster than you need",
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
        '{ADMIN: {"data": QueryEventSystem reply} or {"error": text}}}',
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
            writer = JsonLinesWriter(args.output, append=args.append) if args.output else None
        except OSError as error:
            raise MonitorSetupError(
                f"cannot write to {args.output} ({error.strerror}); give a file in a "
                "writable directory"
            ) from None
        with writer or contextlib.nullcontext():
            session = _Session(collector, args, writer=writer, out=out, err=err, prog=prog)
            return session.run()


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
        self.answered: set[str] = set()  # admin devices that have answered a query

    def run(self) -> int:
        """Poll until --count snapshots or a signal, and return the exit status.  However
        it stops, sampling turned on by --monitor is turned off again, with a warning for
        each server that does not answer that."""
        perf_on = False
        finished = False
        status = EXIT_OK
        try:
            if self.args.monitor:
                self._say("note", SAMPLES_WARNING)
                perf_on = True  # before asking, so that any exit turns it off again
                self.collector.set_perf_monitoring(True)
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
            if perf_on:
                # A further signal must not leave sampling on: only the last poll heeds it.
                with handling(dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)) as handlers:
                    if not finished and not self.output_closed:
                        self._last_poll(handlers)
                    self._warn_left_on(self.collector.set_perf_monitoring(False))
        return status

    def _loop(self) -> None:
        period = self.args.polling_period
        count = self.args.count
        started = time.monotonic()
        polls = 0
        while True:
            self._show(self.collector.poll())
            polls += 1
            if count is not None and polls >= count:
                return
            # Keep a steady cadence; after an overrun, wait for the next slot.
            elapsed = time.monotonic() - started
            time.sleep(period - elapsed % period)

    def _show(self, poll: Poll) -> None:
        self._record(poll)
        if self.args.monitor:
            self._keep_perf_on(poll)
        self.answered.update(
            reply.server.admin for reply in poll.replies if reply.snapshot is not None
        )

    def _record(self, poll: Poll) -> None:
        """Write ``poll`` to the file, then to the screen.  A signal waits until both have
        it, unless it arrives while the screen is being written: that may be blocked (`|
        less` at a page), so the signal acts at once and the screen gets nothing more."""
        text = render_poll(self.history.add(poll))
        with _deferring_signals() as handlers:
            if self.writer is not None:
                self._write_file(poll)
            with handling(handlers):
                self._write_screen(text)

    def _write_file(self, poll: Poll) -> None:
        assert self.writer is not None
        try:
            self.writer.write(poll)
        except OSError as error:
            self.writer = None  # said once; the screen goes on
            raise _OutputError(
                f"cannot write to {self.args.output} ({error.strerror}); snapshots are no "
                "longer written to it. Make sure it can be written (free space, a working "
                "disk) or give another file with -o"
            ) from None

    def _write_screen(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (KeyboardInterrupt, Terminated, BrokenPipeError):
            self._close_output()
            raise
        except OSError as error:
            self._close_output()
            raise _OutputError(
                f"cannot write to standard output ({error.strerror}); send it somewhere "
                "that takes it, such as a file or a pipe"
            ) from None

    def _keep_perf_on(self, poll: Poll) -> None:
        """Turn sampling on in servers that answer with it off: restarted, or answering
        for the first time."""
        off = [
            reply.server
            for reply in poll.replies
            if reply.snapshot is not None and reply.snapshot.perf_monitoring is False
        ]
        if not off or self.collector.set_perf_monitoring(True, off):
            return
        again = ", ".join(server.label for server in off if server.admin in self.answered)
        first = ", ".join(server.label for server in off if server.admin not in self.answered)
        if again:
            self._say(
                "note", f"performance sampling was off in {again} (restarted?); turned it on again"
            )
        if first:
            self._say(
                "note",
                f"turned performance sampling on in {first}, which answers for the first time",
            )

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

    def _warn_left_on(self, failures: dict[str, str]) -> None:
        """Name each server in which sampling could not be turned off, and the remedy."""
        for admin, failure in failures.items():
            self._say(
                "warning",
                f"could not turn performance sampling off in {admin} ({failure}); if that "
                "server still runs, sampling stays on in it. Once it answers, run "
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
def _deferring_signals() -> Iterator[dict[int, Handler]]:
    """Hold stop signals back until the block is done, then act on them; yield the
    handlers that act on them, for parts of the block that must not wait."""
    arrived: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    active = {signum for signum in STOP_SIGNALS if signal.getsignal(signum) != signal.SIG_IGN}
    with handling(dict.fromkeys(active, remember)) as handlers:
        yield handlers
    if arrived:
        raise KeyboardInterrupt if set(arrived) == {signal.SIGINT} else Terminated


if __name__ == "__main__":
    sys.exit(main())
