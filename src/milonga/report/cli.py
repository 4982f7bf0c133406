"""`milonga report RUN.jsonl [-o REPORT.html]`: the command line of `write_report`.

Exit status: 0 when a report was written, warnings or not; 2 when the recording cannot
be used (missing, a directory, unreadable, no poll in it, or the output itself); 1 when
the report cannot be written.  Ctrl-C and SIGTERM are handled by `milonga.commands.run`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

PROG = "milonga report"
EXIT_OUTPUT = 1
EXIT_RECORDING = 2

DESCRIPTION = (
    "Read a recording made by tango-event-monitor -o RUN.jsonl and write one HTML file "
    "that opens offline: a summary (span, servers, worst findings), the findings against "
    "time, and per server its counters, rates, latency, processing times, event gaps, "
    "missed and discarded events, and the periods it did not answer. See docs/report.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `milonga report`."""
    parser.add_argument(
        "recording", metavar="RUN.jsonl", type=Path, help="a recording of tango-event-monitor -o"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="REPORT.html",
        type=Path,
        help="where to write the report, replacing that file (default: RUN.html beside RUN.jsonl)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the report ``args`` asks for; print where it went, or one error line.
    Warnings that cannot be printed (standard error closed) do not stop it."""
    from milonga.report.build import (  # noqa: PLC0415 - matplotlib, once it is needed
        DrawingError,
        OutputError,
        RecordingError,
        default_output,
        write_report,
    )

    output = args.output if args.output is not None else default_output(args.recording)
    try:
        written = write_report(args.recording, output, warn=_warn)
    except RecordingError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_RECORDING
    except (OutputError, DrawingError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_OUTPUT
    print(
        f"{PROG}: wrote {written.path} ({_count(written.polls, 'poll')}, "
        f"{_count(written.servers, 'server')}, {written.size / 1e6:.1f} MB)",
        flush=True,
    )
    return 0


def _warn(message: str) -> None:
    # Standard error closed, or None: the warning is on the page too.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"
