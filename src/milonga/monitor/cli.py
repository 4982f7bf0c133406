"""`tango-event-monitor` (also `milonga monitor`): poll QueryEventSystem, print what changed."""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from milonga import standard_streams
from milonga.monitor.analysis import Analysis, PollUpdate
from milonga.monitor.findings import Severity
from milonga.monitor.jsonl import JsonLinesWriter, PollRecordError, iter_polls, poll_record
from milonga.monitor.metrics import EventSystemMetrics
from milonga.monitor.outputs import (
    JsonLinesOutput,
    Output,
    OutputError,
    Screen,
    WorstSeverity,
    send,
)
from milonga.monitor.poll import RESOLVE_SECONDS, MonitoredServer, Poll
from milonga.monitor.render import render_poll
from milonga.monitor.serve import MetricsServer, PrometheusOutput, ServeError, parse_address
from milonga.monitor.stats import SAMPLE_LIMIT
from milonga.terminated import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, handling, raising

if TYPE_CHECKING:  # the live monitor's modules import Tango, which --replay does without
    from milonga.monitor.collector import Collector, Selection
    from milonga.monitor.loop import Say

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
    "--serve serves the figures to Prometheus at http://HOST:PORT/metrics. "
    "--replay RUN.jsonl prints a recording made with -o FILE as the live run did, "
    "contacting no server.",
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

replay:
  --replay RUN.jsonl reads the polls of a recording instead of polling servers and
  prints them as the live run that recorded them did: the snapshots, tables and findings
  are made again from the recorded replies. Lines that cannot be read (not JSON, cut
  off, another tool's layout) are each a warning, and the rest is replayed. With
  --fail-on the exit status tells the worst finding of the recording; -o FILE records
  the polls again, with this version's findings.

exit status:
  0 after --count snapshots or the end of a replay, 1 if the output cannot be written
  (standard output or error closed, FILE or the screen failing), 2 for bad arguments or
  devices, an address that --serve cannot use, or a recording that cannot be read or
  holds no poll, 3 after --count snapshots or a replay with --fail-on SEVERITY when a
  finding that bad or worse held at any of them, 130 after Ctrl-C, 143 after SIGTERM
  or SIGHUP. The metrics server of --serve is closed however the monitor stops.
"""


class UsageError(Exception):
    """The arguments ask for what the monitor cannot do; the message says what to do."""


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


def _recording(text: str) -> str:
    """The file of --replay: not empty."""
    if not text:
        raise argparse.ArgumentTypeError(
            "expected a file name, got an empty one; give a recording made with -o FILE"
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
        metavar="SECONDS",
        help=f"time between snapshots, from {MIN_PERIOD_SECONDS:g} to {MAX_PERIOD_SECONDS:g} "
        f"(default: {DEFAULT_PERIOD_SECONDS:g}); {PERIOD_REASON}",
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
        help="with --count or --replay: exit with status 3 if a finding of this severity or "
        "worse held at any snapshot, for scripts and CI pipelines",
    )
    parser.add_argument(
        "--replay",
        type=_recording,
        metavar="RUN.jsonl",
        help="print the polls recorded in RUN.jsonl (by -o FILE) as the live run did, "
        "findings included, instead of polling servers; contacts no server",
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
    except (UsageError, ServeError) as error:
        print(f"{prog}: error: {error}", file=err, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED


def _run(args: argparse.Namespace, prog: str, out: TextIO, err: TextIO) -> int:
    """Check ``args`` (raising `UsageError`), then replay or monitor as they ask."""
    say = functools.partial(_say, prog, err)
    if args.append and not args.output:
        raise UsageError("--append adds to the file of --output; give -o FILE as well")
    if args.quiet and args.output == STANDARD_OUTPUT:
        raise UsageError(
            "--quiet leaves standard output empty, and -o - writes the snapshots to it; "
            "give one of them, or -o FILE to write the snapshots to a file"
        )
    if args.replay is not None:
        return _replay(args, out, say)
    if args.fail_on is not None and args.count is None:
        raise UsageError(
            "--fail-on sets the exit status when the monitor stops by itself after --count "
            "snapshots, or at the end of a --replay; give --count N as well"
        )
    if not args.devices and not args.everything:
        raise UsageError(
            "no device given; name at least one device, admin device or pattern (such as "
            "'sys/*/*'), or give --all to poll every device server in the database"
        )
    from milonga.monitor.collector import MonitorSetupError  # noqa: PLC0415 - imports Tango

    try:
        return _live(args, prog, out, say)
    except MonitorSetupError as error:
        raise UsageError(str(error)) from None


def _live(args: argparse.Namespace, prog: str, out: TextIO, say: Say) -> int:
    """Monitor the servers that ``args`` select, and return the exit status; raises
    `MonitorSetupError` or `ServeError` if it cannot start."""
    from milonga.monitor.collector import Collector, select_servers  # noqa: PLC0415 - Tango

    selection = select_servers(args.devices, everything=args.everything)
    for pattern in selection.unmatched:
        say(
            "warning",
            f"{pattern!r} matches no exported device yet; it is looked up again every "
            f"{RESOLVE_SECONDS:g} s",
        )
    serving = _serving(args.serve, _polling_period(args), say)
    with serving as outputs, Collector(selection.servers) as collector:
        lacking = _check_support(collector, selection, say)
        with _writer(args) as writer:
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


def _polling_period(args: argparse.Namespace) -> float:
    """The polling period ``args`` ask for, or the default."""
    return DEFAULT_PERIOD_SECONDS if args.polling_period is None else float(args.polling_period)


@contextlib.contextmanager
def _writer(args: argparse.Namespace) -> Iterator[JsonLinesWriter | None]:
    """The writer of the JSON Lines file of ``-o FILE`` inside the block, closed on
    leaving; None without it or with ``-o -``.  Raises `UsageError` if it cannot be
    opened."""
    if args.output in {None, STANDARD_OUTPUT}:
        yield None
        return
    try:
        writer = JsonLinesWriter(args.output, append=args.append)
    except OSError as error:
        raise UsageError(
            f"cannot write to {args.output} ({error.strerror}); give a file in a writable directory"
        ) from None
    with writer:
        yield writer


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
    from milonga.monitor.collector import no_query_command  # noqa: PLC0415 - imports Tango

    silent, lacking = collector.find_support(collector.servers)
    for server in lacking:
        if server.admin in selection.named:
            raise UsageError(no_query_command(server))
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
    from milonga.monitor.collector import is_pattern, select_servers  # noqa: PLC0415 - Tango

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
    from milonga.monitor.loop import PollLoop  # noqa: PLC0415 - imports Tango

    worst = WorstSeverity()
    every: list[Output] = [*outputs, worst]
    if writer is not None:
        every.insert(0, JsonLinesOutput(writer, args.output))
    loop = PollLoop(
        collector,
        every,
        period=_polling_period(args),
        count=args.count,
        sampling=args.monitor,
        screen=_screen(args, out),
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
    return _status(args, worst)


def _status(args: argparse.Namespace, worst: WorstSeverity) -> int:
    """The exit status of a monitor or replay that got to its end: `EXIT_FINDINGS` if
    --fail-on is given and a finding that bad or worse held, `EXIT_OK` otherwise."""
    if args.fail_on is not None and (worst.worst or 0) >= Severity.parse(args.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


def _screen(args: argparse.Namespace, out: TextIO) -> Screen | None:
    """The screen on ``out`` that ``args`` ask for: text snapshots, JSON lines with
    ``-o -``, or none with --quiet."""
    if args.quiet:
        return None
    return Screen(out, _json_line if args.output == STANDARD_OUTPUT else _text)


REPLAY_CONFLICTS = (
    ("DEVICE", "devices"),
    ("--all", "everything"),
    ("--serve", "serve"),
    ("--monitor", "monitor"),
    ("--polling-period", "polling_period"),
    ("--count", "count"),
)
"""The options of a live run, which --replay takes none of: (option, its argument)."""


def _replay(args: argparse.Namespace, out: TextIO, say: Say) -> int:
    """Replay the recording of --replay as ``args`` ask, and return the exit status;
    raises `UsageError` if an option of a live run is given, if -o FILE names the
    recording itself, or if it cannot be read or holds no poll."""
    given = [
        option for option, name in REPLAY_CONFLICTS if getattr(args, name) not in (None, False, [])
    ]
    if given:
        raise UsageError(
            f"--replay reads a recording and contacts no server, so it takes no "
            f"{', '.join(given)}; leave {'it' if len(given) == 1 else 'them'} out to replay "
            f"{args.replay}, or leave out --replay to poll servers"
        )
    if args.output not in {None, STANDARD_OUTPUT} and _same_file(args.replay, args.output):
        raise UsageError(
            f"-o {args.output} is the recording that --replay reads, which writing would "
            "destroy; give another file to record the replay in"
        )
    recorded = _recorded(args.replay, say)
    first = next(recorded, None)  # before -o FILE is emptied: the recording may be no use
    if first is None:
        raise UsageError(f"{args.replay} holds no poll; give a recording made with {PROG} -o FILE")
    with _writer(args) as writer:
        outputs: list[Output] = [] if writer is None else [JsonLinesOutput(writer, args.output)]
        worst = WorstSeverity()
        try:
            _play(itertools.chain([first], recorded), [*outputs, worst], _screen(args, out))
        except OutputError as error:
            say("error", str(error))
            return EXIT_FAILED
        except BrokenPipeError:
            return EXIT_FAILED
    return _status(args, worst)


def _play(polls: Iterable[Poll], outputs: Sequence[Output], screen: Screen | None) -> None:
    """Send each of ``polls``, as `Analysis` makes it an update, to ``outputs`` and
    ``screen``, as the live loop does.  Raises the first `OutputError` once that poll has
    reached all of them, and BrokenPipeError when the screen's reader went away."""
    analysis = Analysis()
    for poll in polls:
        failure = send(analysis.add(poll), outputs, screen)
        if failure is not None:
            raise failure


def _recorded(path: str, say: Say) -> Iterator[Poll]:
    """The polls recorded in ``path``, each line that cannot be read being a warning;
    raises `UsageError` if the file cannot be read or is no recording."""
    try:
        yield from iter_polls(path, problems=lambda problem: say("warning", problem.message))
    except OSError as error:
        raise UsageError(
            f"cannot read {path} ({error.strerror}); give a recording made with {PROG} -o FILE"
        ) from None
    except PollRecordError as error:
        raise UsageError(str(error)) from None


def _same_file(path: str, other: str) -> bool:
    """Whether ``path`` and ``other`` name one existing file."""
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


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
