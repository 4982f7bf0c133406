"""`tango-event-monitor` (also `milonga monitor`): poll QueryEventSystem, print what changed."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TextIO

from milonga.monitor.collector import Collector, MonitorSetupError, resolve_servers
from milonga.monitor.jsonl import JsonLinesWriter
from milonga.monitor.poll import Poll, PollHistory
from milonga.monitor.render import render_poll
from milonga.terminated import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    raise_terminated,
)

PROG = "tango-event-monitor"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_PERIOD_SECONDS = 10.0

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
  0 after --count snapshots, 1 if the output cannot be written, 2 for bad arguments or
  devices, 130 after Ctrl-C, 143 after SIGTERM.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


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
        type=_positive_float,
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
    """Monitor as ``args`` (from `add_arguments`) ask, writing to ``out`` and ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        with _handling_signals():
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

    def run(self) -> int:
        perf_on = False
        finished = False
        status = EXIT_OK
        try:
            if self.args.monitor:
                print(f"{self.prog}: note: {SAMPLES_WARNING}", file=self.err, flush=True)
                perf_on = True  # before asking, so that any exit turns it off again
                self.collector.set_perf_monitoring(True)
            self._loop()
            finished = True
        except KeyboardInterrupt:
            status = EXIT_INTERRUPTED
        except Terminated:
            status = EXIT_TERMINATED
        except BrokenPipeError:
            self._close_output()
            status = EXIT_FAILED
        except OSError as error:  # the output file: disk full, removed device...
            print(f"{self.prog}: error: {error}", file=self.err, flush=True)
            status = EXIT_FAILED
        finally:
            if perf_on:
                with _ignoring_signals():
                    if not finished and not self.output_closed:
                        self._last_poll()
                    self.collector.set_perf_monitoring(False)
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
        with _deferring_signals():  # the file and the screen show the same snapshots
            self._record(poll)
        if self.args.monitor:
            self._keep_perf_on(poll)

    def _record(self, poll: Poll) -> None:
        if self.writer is not None:
            self.writer.write(poll)
        self.out.write(render_poll(self.history.add(poll)))
        self.out.flush()

    def _keep_perf_on(self, poll: Poll) -> None:
        """A server that restarted has sampling off again: turn it back on."""
        off = [
            reply.server
            for reply in poll.replies
            if reply.snapshot is not None and reply.snapshot.perf_monitoring is False
        ]
        if off and not self.collector.set_perf_monitoring(True, off):
            labels = ", ".join(server.label for server in off)
            print(
                f"{self.prog}: note: performance sampling was off in {labels} "
                "(restarted?); turned it on again",
                file=self.err,
                flush=True,
            )

    def _last_poll(self) -> None:
        """Show the samples taken since the last snapshot before sampling is turned off."""
        try:
            self._record(self.collector.poll())
        except BrokenPipeError:
            self._close_output()
        except OSError as error:
            print(f"{self.prog}: error: {error}", file=self.err, flush=True)

    def _close_output(self) -> None:
        """The reader went away (``| head``): send the rest of the output nowhere."""
        self.output_closed = True
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handling_signals() -> Iterator[None]:
    """SIGTERM raises `Terminated`, so that it cleans up like Ctrl-C does."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _deferring_signals() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block is done, then act on them."""
    if not _in_main_thread():
        yield
        return
    arrived: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {
        signum: signal.signal(signum, remember) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if signal.SIGTERM in arrived:
        raise Terminated
    if arrived:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _ignoring_signals() -> Iterator[None]:
    """Let the clean-up finish: a second Ctrl-C must not leave sampling on."""
    if not _in_main_thread():
        yield
        return
    previous = {
        signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
