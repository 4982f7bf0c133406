"""``python -m benchmarks [--quick] [--json PATH] [NAME ...]``: run benchmarks, print a table.

Exit status 0 after a complete run, 2 for a usage error such as an unknown NAME (one line
on stderr, nothing run), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import tango

# Importing a benchmark module registers its benchmarks: raw PyTango first, then milonga's.
import benchmarks.async_scheduler
import benchmarks.exporter
import benchmarks.findings
import benchmarks.lrc
import benchmarks.monitor
import benchmarks.raw_pytango
import benchmarks.report
import benchmarks.scheduler
import benchmarks.testing  # noqa: F401
from benchmarks.harness import (
    REGISTRY,
    Measurement,
    Options,
    UnknownBenchmarkError,
    render_table,
    write_json,
)


def machine_description() -> str:
    """One line naming what the numbers were measured on."""
    return (
        f"machine: {os.cpu_count()} CPUs {platform.machine()}, Python {platform.python_version()},"
        f" PyTango {tango.__version__}, cppTango {tango.constants.TgLibVers}"
    )


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run event-system benchmarks in private Tango sandboxes and print a table "
        "of medians over repeated measurements.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats and shorter runs (about 3 minutes for all)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(REGISTRY.names)}",
    )
    return parser.parse_args(argv)


def _usage_error(message: str) -> int:
    print(f"python -m benchmarks: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        selected = REGISTRY.select(arguments.names)
    except UnknownBenchmarkError as error:
        return _usage_error(str(error))
    if arguments.json is not None and not arguments.json.parent.is_dir():
        return _usage_error(
            f"cannot write {arguments.json}: directory {arguments.json.parent} does not exist; "
            "create it or choose another --json path"
        )
    options = Options(quick=arguments.quick)
    print(machine_description())
    print(f"mode: {'quick' if options.quick else 'full'}, median of {options.repeats} repeats")
    measurements: list[Measurement] = []
    try:
        for benchmark in selected:
            print(f"running {benchmark.name}: {benchmark.summary}", file=sys.stderr, flush=True)
            measurements.extend(benchmark.run(options))
    except KeyboardInterrupt:
        print("python -m benchmarks: interrupted; every sandbox was stopped", file=sys.stderr)
        return 130
    print(render_table(measurements))
    if arguments.json is not None:
        write_json(measurements, arguments.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
