"""`tango-event-monitor` (also `milonga monitor`): poll QueryEventSystem, print what changed."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from milonga import standard_streams
from milonga.monitor.analysis import PollUpdate
from milonga.monitor.collector import (
    Collector,
    MonitorSetupError,
    Selection,
    is_pattern,
    no_query_command,
    select_servers,
)
from milonga.monitor.findings import Severity
from milonga.monitor.jsonl import JsonLinesWriter, poll_record
from milonga.monitor.loop import (
    RESOLVE_SECONDS,
    JsonLinesOutput,
    Output,
    OutputError,
    PollLoop,
    Say,
    Screen,
    WorstSeverity,
)
from milonga.monitor.metrics import EventSystemMetrics
from milonga.monitor.poll import MonitoredServer
from milonga.monitor.render import render_poll
from milonga.monitor.serve import MetricsServer, PrometheusOutput, ServeError, parse_address
from milonga.monitor.stats import SAMPLE_LIMIT
from milonga.terminated import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, handling, raising

PROG = "tango-event-monitor"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FINDINGS = 3
"""With --fail-on: a finding that bad or worse held at some snapshot."""
FAIL_ON_CHOICES = ("warning", "error")
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
    "full TRL; devices of one server are watched as one entry. A DEVICE holding *, ? or "
    "[ is a shell-style pattern over the exported devices, such as 'sys/*/*' (quote it); "
    "with patterns or --all the servers are looked up again every "
    f"{RESOLVE_SECONDS:g} s, so that servers that appear or go away are followed. "
    "--serve serves the figures to Prometheus at http://HOST:PORT/metrics.",
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
  maximum and 1/10/90/99% percentiles (10/90% from 10 samples, 1/99% from 100). Last
  come the findings, what the monitor concludes from its snapshots: 'SEVERITY: KIND:
  message' at every snapshot while one holds, then one 'cleared: KIND' line (see
  docs/findings.md).

note:
{textwrap.indent(textwrap.fill(SAMPLES_WARNING.capitalize() + ".", width=86), "  ")}

exit status:
  0 after --count snapshots, 1 if the output cannot be written (standard output or
  error closed, FILE or the screen failing), 2 for bad arguments or devices, or an
  address that --serve cannot use, 3 after --count snapshots with --fail-on SEVERITY
  when a finding that bad or worse held at any of them, 130 after Ctrl-C, 143 after
  SIGTERM or SIGHUP. The metrics server of --serve is closed however the monitor stops.
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


def _address(text: str) -> tuple[str, int]:
    """The address of --serve, as `parse_address` reads it."""
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The monitor's options, shared by `tango-event-monitor` and `milonga monitor`."""
    parser.add_argument(
        "devices",
        nargs="*",
        metavar="DEVICE",
        help="a device, alias, admin device (dserver/Executable/instance) or full TRL, or a "
        "shell-style pattern over the exported devices ('sys/*/*'); at least one unless "
        "--all is given",
    )
    parser.add_argument(
        "--all",
        dest="everything",
        action="store_true",
        help="poll every device server exported in the Tango database (TANGO_HOST)",
    )
    parser.add_argument(
        "--serve",
        type=_address,
        metavar="[HOST:]PORT",
        help="serve the latest snapshot's figures as Prometheus metrics at "
        "http://HOST:PORT/metrics (HOST 127.0.0.1 by default) until the monitor stops",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no snapshots on standard output (with --serve or -o FILE, as a "
        "service); notes, warnings and errors still go to standard error",
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
        '{ADMIN: {"data": QueryEventSystem reply} or {"error": text}}, "findings": [...]}. '
        'With "-o -" the lines go to standard output instead of the text snapshots (a file '
        "named - is ./-)",
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
    parser.add_argument(
        "--fail-on",
        choices=FAIL_ON_CHOICES,
        help="with --count: exit with status 3 if a finding of this severity or worse held "
        "at any snapshot, for scripts and CI pipelines",
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
    except (MonitorSetupError, ServeError) as error:
        print(f"{prog}: error: {error}", file=err, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED


def _run(args: argparse.Namespace, prog: str, out: TextIO, err: TextIO) -> int:
    if args.append and not args.output:
        raise MonitorSetupError("--append adds to the file of --output; give -o FILE as well")
    if args.fail_on is not None and args.count is None:
        raise MonitorSetupError(
            "--fail-on sets the exit status when the monitor stops by itself after --count "
            "snapshots; give --count N as well"
        )
    if args.quiet and args.output == STANDARD_OUTPUT:
        raise MonitorSetupError(
            "--quiet leaves standard output empty, and -o - writes the snapshots to it; "
            "give one of them, or -o FILE to write the snapshots to a file"
        )
    if not args.devices and not args.everything:
        raise MonitorSetupError(
            "no device given; name at least one device, admin device or pattern (such as "
            "'sys/*/*'), or give --all to poll every device server in the database"
        )
    selection = select_servers(args.devices, everything=args.everything)
    say = functools.partial(_say, prog, err)
    for pattern in selection.unmatched:
        say(
            "warning",
            f"{pattern!r} matches no exported device yet; it is looked up again every "
            f"{RESOLVE_SECONDS:g} s",
        )
    serving = _serving(args.serve, args.polling_period, say)
    with serving as outputs, Collector(selection.servers) as collector:
        lacking = _check_support(collector, selection, say)
        try:
            to_file = args.output not in {None, STANDARD_OUTPUT}
            writer = JsonLinesWriter(args.output, append=args.append) if to_file else None
        except OSError as error:
            raise MonitorSetupError(
                f"cannot write to {args.output} ({error.strerror}); give a file in a "
                "writable directory"
            ) from None
        with writer or contextlib.nullcontext():
            return _monitor(
                collector,
                args,
                writer=writer,
                outputs=outputs,
                out=out,
                say=say,
                prog=prog,
                selection=selection,
                lacking=lacking,
            )


@contextlib.contextmanager
def _serving(address: tuple[str, int] | None, period: float, say: Say) -> Iterator[list[Output]]:
    """Serve metrics at ``address`` (none if None) inside the block, with the polling
    ``period``, and yield the outputs that feed them; the server is started on entry
    (raising `ServeError` if it cannot be) and closed on leaving, however the block ends."""
    if address is None:
        yield []
        return
    metrics = EventSystemMetrics(polling_period=period)
    with MetricsServer(*address, metrics) as server:
        say("note", f"serving Prometheus metrics at {_url(*server.address)}")
        yield [PrometheusOutput(metrics)]


def _url(host: str, port: int) -> str:
    """The URL of the metrics of a server bound to ``host:port``."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"


def _check_support(collector: Collector, selection: Selection, say: Say) -> list[MonitoredServer]:
    """Check that the servers can be monitored; warn about each that does not answer.

    Return those that answer without the query command, to be left out; raises
    `MonitorSetupError` if one of them was named rather than matched by a pattern or
    ``--all``.
    """
    silent, lacking = collector.find_support(collector.servers)
    for server in lacking:
        if server.admin in selection.named:
            raise MonitorSetupError(no_query_command(server))
    for server in silent:
        say(
            "warning",
            f"{server.label} does not answer yet; it is polled all the same and reported "
            "once it answers",
        )
    return lacking


def _resolver(args: argparse.Namespace) -> Callable[[], Selection] | None:
    """How the loop looks the servers up again: only with patterns or --all, as names
    alone always select the same servers."""
    if not args.everything and not any(is_pattern(name) for name in args.devices):
        return None
    return functools.partial(select_servers, args.devices, everything=args.everything)


def _monitor(
    collector: Collector,
    args: argparse.Namespace,
    *,
    writer: JsonLinesWriter | None,
    outputs: Sequence[Output],
    out: TextIO,
    say: Say,
    prog: str,
    selection: Selection,
    lacking: Sequence[MonitoredServer],
) -> int:
    """Run the poll loop as ``args`` ask, with the screen on ``out`` (none with
    --quiet), the JSON Lines file of ``writer`` and ``outputs``, and return the exit
    status; a stop signal raises.  The servers of ``lacking`` are left out first, and
    those that ``selection`` named are never left out."""
    worst = WorstSeverity()
    every: list[Output] = [*outputs, worst]
    if writer is not None:
        every.insert(0, JsonLinesOutput(writer, args.output))
    as_lines = args.output == STANDARD_OUTPUT
    loop = PollLoop(
        collector,
        every,
        period=args.polling_period,
        count=args.count,
        sampling=args.monitor,
        screen=None if args.quiet else Screen(out, _json_line if as_lines else _text),
        say=say,
        prog=prog,
        resolve=_resolver(args),
        required=selection.named,
    )
    loop.leave_out(lacking)
    if args.monitor:
        say("note", SAMPLES_WARNING)
    try:
        loop.run()
    except (BrokenPipeError, OutputError):  # an OutputError has been said
        return EXIT_FAILED
    if args.fail_on is not None and (worst.worst or 0) >= Severity.parse(args.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


def _say(prog: str, err: TextIO, kind: str, text: str) -> None:
    """Tell the user ``text`` on ``err``, as a note, warning or error of ``prog``."""
    print(f"{prog}: {kind}: {text}", file=err, flush=True)


def _text(update: PollUpdate) -> str:
    """The text snapshot of ``update``, its findings included."""
    return render_poll(update.report, update.findings)


def _json_line(update: PollUpdate) -> str:
    """The JSON line of ``update``, for ``-o -``."""
    return poll_record(update.poll, update.findings) + "\n"


if __name__ == "__main__":
    sys.exit(main())
