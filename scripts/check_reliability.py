#!/usr/bin/env python3
"""Run the whole test suite again and again, to show that it does not depend on how fast
the machine is: `make test` CHECK_IDLE_RUNS times in a row (default 5), then
CHECK_BUSY_RUNS times (default 3) while one process per core spins, keeping every core
busy.  It stops at the first run that fails.

It prints one line per run (run i/N, idle or busy, passed or failed, duration) and a
summary; each run's output goes to a log file in a new temporary directory, and the end
of a failed run's log is printed.  Exit status: 0 if every run passed, 1 if one failed,
2 for bad settings, 128 + n when stopped by signal n.

The spinners and a run under way are stopped whatever happens: at the end, on an error,
on Ctrl-C, SIGTERM or SIGHUP, and the spinners also die with this script if it is killed.

Settings, from the environment (`make check-reliability CHECK_BUSY_RUNS=5` sets them too):
  CHECK_IDLE_RUNS   runs on the idle machine, 0 or more (default 5)
  CHECK_BUSY_RUNS   runs with every core kept busy, 0 or more (default 3)
  CHECK_COMMAND     the command of one run, instead of `make test`, split as a shell
                    would (`CHECK_COMMAND=true` tries the script itself in a moment)
  CHECK_LOG_DIR     where the logs go (default: a new temporary directory)
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
DEFAULT_COMMAND = "make test"
DEFAULT_RUNS = {"CHECK_IDLE_RUNS": 5, "CHECK_BUSY_RUNS": 3}
SPIN = "while True: pass"
STOP_GRACE_SECONDS = 30.0
FAILED_LOG_LINES = 40
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class BadSetting(Exception):
    """A setting that cannot be used; the message says which, and what to give instead."""


class Stopped(BaseException):
    """A stop signal arrived; unwinds so that everything started is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_count(name: str) -> int:
    """The number of runs the environment variable ``name`` asks for."""
    text = os.environ.get(name, "").strip()
    if not text:
        return DEFAULT_RUNS[name]
    if not text.isdigit():
        raise BadSetting(f"{name}={text!r} is not a number of runs; give 0 or more, e.g. 3")
    return int(text)


def command() -> list[str]:
    """The command of one run: CHECK_COMMAND, or `make test`."""
    text = os.environ.get("CHECK_COMMAND", DEFAULT_COMMAND)
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise BadSetting(f"CHECK_COMMAND={text!r} cannot be split into words: {error}") from None
    if not words:
        raise BadSetting("CHECK_COMMAND is empty; give a command, or unset it for `make test`")
    return words


def core_count() -> int:
    """The cores this script may run on, as `nproc` counts them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def die_with_parent() -> None:
    """In a child about to start: have Linux kill it when this script dies, even by SIGKILL."""
    with suppress(AttributeError, OSError):  # elsewhere, only the clean-up stops them
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def spinners(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes that keep one core busy each, for the ``with`` block."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            # In a session of their own, so that Ctrl-C reaches only this script.
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", SPIN],
                    start_new_session=True,
                    preexec_fn=die_with_parent,  # noqa: PLW1509 (no other thread runs)
                )
            )
        yield started
    finally:
        for spinner in started:
            spinner.kill()
        for spinner in started:
            spinner.wait()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and everything it started: SIGTERM to its process group, then
    SIGKILL to what is left after STOP_GRACE_SECONDS."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what the leader left behind
        return


def run_once(words: list[str], log: Path) -> bool:
    """Run ``words`` in the repository, its output into ``log``; whether it passed."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            words, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait() == 0
        finally:
            stop_group(process)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def tail(log: Path, lines: int) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def check(words: list[str], idle: int, busy: int, logs: Path) -> int:
    """The runs, one line each, then a summary; 0 if all passed, else 1."""
    total = idle + busy
    say(f"{shlex.join(words)}: {idle} idle and {busy} busy runs; logs in {logs}")
    began = time.monotonic()
    number = 0
    for mode, runs, spinning in (("idle", idle, 0), ("busy", busy, core_count())):
        if runs == 0:
            continue
        with spinners(spinning):
            for _ in range(runs):
                number += 1
                log = logs / f"run-{number}-{mode}.log"
                started = time.monotonic()
                passed = run_once(words, log)
                took = duration(time.monotonic() - started)
                say(f"run {number}/{total}  {mode}  {'passed' if passed else 'failed'}  {took}")
                if not passed:
                    say(f"--- the end of {log}:\n{tail(log, FAILED_LOG_LINES)}---")
                    say(f"FAILED: run {number}/{total} ({mode}) failed; no run after it was made")
                    return 1
    say(f"PASSED: {total} runs ({idle} idle, {busy} busy) in {duration(time.monotonic() - began)}")
    return 0


def say(line: str) -> None:
    print(line, flush=True)


def log_directory() -> Path:
    """CHECK_LOG_DIR, made if needed, or a new temporary directory."""
    named = os.environ.get("CHECK_LOG_DIR", "").strip()
    if not named:
        return Path(tempfile.mkdtemp(prefix="milonga-check-"))
    try:
        Path(named).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadSetting(
            f"CHECK_LOG_DIR={named!r} cannot be used: {error.strerror}; "
            "give a writable directory, or unset it for a temporary one"
        ) from None
    return Path(named)


def on_stop(signum: int, frame: FrameType | None) -> None:
    """Unwind on the first stop signal; ignore the next ones until everything is stopped."""
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise Stopped(signum)


def main() -> int:
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_stop)
    try:
        words = command()
        idle, busy = run_count("CHECK_IDLE_RUNS"), run_count("CHECK_BUSY_RUNS")
        return check(words, idle, busy, log_directory())
    except BadSetting as error:
        print(f"check-reliability: error: {error}", file=sys.stderr)
        return 2
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        print(
            f"check-reliability: stopped by {name}; the run and the spinners are stopped",
            file=sys.stderr,
        )
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
