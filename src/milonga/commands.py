"""The `milonga` subcommands, which `milonga.cli` imports once it handles stop signals."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from pathlib import Path

from milonga import __version__, standard_streams
from milonga.demo import DemoError
from milonga.demo.timing import QUICK
from milonga.monitor import cli as monitor_cli
from milonga.report import cli as report_cli
from milonga.sandbox import SandboxError
from milonga.terminated import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

EXIT_ERROR = 1


def _directory(text: str) -> Path:
    """The argument of --directory: any path but the empty string."""
    from milonga.sandbox.sandbox import sandbox_directory  # noqa: PLC0415 - imports Tango

    try:
        return sandbox_directory(text)
    except SandboxError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _record_directory(text: str) -> Path:
    """The argument of demo --record: any path but the empty string."""
    if not text:
        raise argparse.ArgumentTypeError(
            "got an empty directory name; give the directory to record the polls in "
            "(use '.' for the current one)"
        )
    return Path(text)


def _sandbox(args: argparse.Namespace) -> int:
    from milonga.sandbox import TangoSandbox  # noqa: PLC0415 - imports Tango

    with TangoSandbox(args.directory) as sandbox:
        print("A Tango sandbox is running. In another terminal:", flush=True)
        print(f"    export TANGO_HOST={sandbox.tango_host}", flush=True)
        print(f"Database and server logs: {sandbox.directory}", flush=True)
        print("Press Ctrl-C to stop it.", flush=True)
        try:
            while True:
                signal.pause()
        except (KeyboardInterrupt, Terminated):
            print("Stopping the sandbox.", flush=True)
            raise


def _demo(args: argparse.Namespace) -> int:
    from milonga.demo import DemoOptions, run_demo  # noqa: PLC0415 - imports Tango

    options = DemoOptions(
        fixed=args.fixed, quick=args.quick, keep_running=args.keep_running, record=args.record
    )
    run_demo(options, sys.stdout)
    return 0


def _monitor(args: argparse.Namespace) -> int:
    return monitor_cli.run(args, prog="milonga monitor")


def _report(args: argparse.Namespace) -> int:
    return report_cli.run(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `milonga` command line; each subcommand sets ``run``."""
    parser = argparse.ArgumentParser(
        prog="milonga",
        description="Tools for event-driven Tango Controls clients.",
    )
    parser.add_argument("--version", action="version", version=f"milonga {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sandbox = commands.add_parser(
        "sandbox",
        help="run an empty Tango control system on 127.0.0.1 until Ctrl-C",
        description="Start PyTango's database server on a free port of 127.0.0.1, print the "
        "TANGO_HOST to export, and keep it running until Ctrl-C (exit status 130) or "
        "SIGTERM (143).",
    )
    sandbox.add_argument(
        "--directory",
        metavar="DIR",
        type=_directory,
        help="keep the SQLite database and logs in DIR, which no other sandbox may be using "
        "(default: a temporary directory removed on exit)",
    )
    sandbox.set_defaults(run=_sandbox)
    demo = commands.add_parser(
        "demo",
        help="reproduce a 'missing' Tango event, diagnose it with the monitor, and fix it",
        description="Start a real control system on 127.0.0.1 in which a slow event callback "
        "makes foo/bar/top Scan() time out, watch it with the event monitor, and print a "
        "diagnosis computed from the monitor's snapshots. See docs/tutorial.md.",
    )
    demo.add_argument(
        "--fixed",
        action="store_true",
        help="run the system as it is, then again with CallbackScheduler in its devices, "
        "and compare the figures",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="the same story with shorter times (scan: "
        f"{QUICK.scan_seconds:g} s, Scan() timeout: {QUICK.scan_timeout_seconds:g} s)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the control system running afterwards, print the TANGO_HOST to export, "
        "and wait for Ctrl-C",
    )
    demo.add_argument(
        "--record",
        metavar="DIR",
        type=_record_directory,
        help="write every poll of the monitor to DIR/plain.jsonl (with --fixed, those of the "
        "run with the scheduler to DIR/fixed.jsonl) as tango-event-monitor -o does, for "
        "`milonga report`; DIR is created if need be",
    )
    demo.set_defaults(run=_demo)
    monitor = commands.add_parser(
        "monitor",
        help="poll device servers' QueryEventSystem and show what changed in their events",
        description=monitor_cli.DESCRIPTION,
        epilog=monitor_cli.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    monitor_cli.add_arguments(monitor)
    monitor.set_defaults(run=_monitor)
    report = commands.add_parser(
        "report",
        help="turn a recording of tango-event-monitor -o into an HTML report with plots",
        description=report_cli.DESCRIPTION,
    )
    report_cli.add_arguments(report)
    report.set_defaults(run=_report)
    return parser


HEAVY_MODULES = {
    "sandbox": "milonga.sandbox.sandbox",
    "demo": "milonga.demo.runner",
    "monitor": "milonga.monitor.loop",
    "report": "milonga.report.build",
}
"""What each subcommand imports before it can start: Tango, or matplotlib for the report."""


def load(args: argparse.Namespace) -> None:
    """Import what the subcommand of ``args`` needs, so that `milonga.cli` does it while it
    holds stop signals back; a replay (``monitor --replay``) needs no Tango."""
    if args.command == "monitor" and args.replay is not None:
        return
    importlib.import_module(HEAVY_MODULES[args.command])


def run(args: argparse.Namespace) -> int:
    """Run the subcommand ``args`` (from `build_parser`) names and return its exit status.

    The caller has made Ctrl-C raise KeyboardInterrupt and SIGTERM and SIGHUP `Terminated`
    (`milonga.terminated.run_command` does): each stops what the subcommand started.
    """
    if not standard_streams.usable("milonga", sys.stdout, sys.stderr):
        return EXIT_ERROR
    try:
        return _run_reporting_errors(args)
    except KeyboardInterrupt:
        print("milonga: interrupted; everything it started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("milonga: terminated; everything it started has been stopped", file=sys.stderr)
        return EXIT_TERMINATED


def _run_reporting_errors(args: argparse.Namespace) -> int:
    """Run the subcommand; a failing standard output or a sandbox or demo error ends it
    with status 1 and one message."""
    try:
        status: int = args.run(args)
    except BrokenPipeError:
        # The reader went away (`milonga demo | head`): nobody is left to tell.
        standard_streams.discard(sys.stdout)
        return EXIT_ERROR
    except OSError as error:
        if standard_streams.takes_output(sys.stdout):
            raise
        # Standard output is failing: a full disk, say.
        standard_streams.discard(sys.stdout)
        print(
            f"milonga: error: cannot write to standard output ({error.strerror}); send it "
            "somewhere that takes it, such as a file on a disk with room, or a pipe",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except (SandboxError, DemoError) as error:
        print(f"milonga: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return status
