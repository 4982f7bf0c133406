"""Entry points of the `milonga` and `tango-event-monitor` commands.

Both handle Ctrl-C, SIGTERM and SIGHUP before they import Tango, which takes a while, so
that a signal during the imports ends them cleanly (`milonga.terminated.run_command`).
This module therefore imports only the standard library and milonga's light helpers; the
subcommands are in `milonga.commands` and the monitor in `milonga.monitor.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from milonga.terminated import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `milonga` command line and return its exit status."""

    def load() -> Callable[[], int]:
        from milonga import commands  # noqa: PLC0415

        args = commands.build_parser().parse_args(argv)
        commands.load(args)  # Tango, or matplotlib
        return lambda: commands.run(args)

    return run_command("milonga", load)


def monitor_main(argv: Sequence[str] | None = None) -> int:
    """Run `tango-event-monitor` and return its exit status."""

    def load() -> Callable[[], int]:
        from milonga.monitor import cli  # noqa: PLC0415 - the pure side of the monitor

        args = cli.build_parser().parse_args(argv)
        if args.replay is None:  # a live run: import Tango now, while signals are held
            from milonga.monitor import loop  # noqa: F401, PLC0415

        return lambda: cli.run(args)

    return run_command("tango-event-monitor", load)


if __name__ == "__main__":
    sys.exit(main())
