"""`milonga demo`: the missing-event control system, watched by the monitor, diagnosed, fixed.

`run_demo` starts a sandbox, tells the story once (or, with ``fixed``, first without and
then with the scheduler), and stops everything when it returns or raises.  With ``record``,
it writes every poll its monitor takes to a JSON Lines file per run, as
`tango-event-monitor -o FILE` does, for `milonga report`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import tango

from milonga.demo.comparison import DemoRun, ScanOutcome, render_comparison
from milonga.demo.devices import IDLE_TIMEOUT, SCAN_COMPLETE
from milonga.demo.errors import DemoError
from milonga.demo.figures import caught_up, diagnose
from milonga.demo.live import Console, LiveMonitor
from milonga.demo.report import render_diagnosis
from milonga.demo.system import (
    HW,
    HW_SERVER,
    ROGUE,
    TOP,
    TOP_SERVER,
    cannot_start,
    remove_system,
    start_system,
)
from milonga.demo.timing import NORMAL, QUICK, Timing
from milonga.monitor.analysis import PollUpdate
from milonga.monitor.jsonl import JsonLinesWriter
from milonga.sandbox import SandboxError, TangoSandbox
from milonga.tango_errors import root_cause
from milonga.terminated import Terminated

LOG_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
PLAIN_RECORD = "plain.jsonl"
"""The file of ``--record DIR`` with the polls of the system as it is."""
FIXED_RECORD = "fixed.jsonl"
"""The file of ``--record DIR`` with the polls of the system with the scheduler (--fixed)."""


@dataclass(frozen=True)
class DemoOptions:
    """The options of `milonga demo`; ``record`` is the directory to record the polls in."""

    fixed: bool = False
    quick: bool = False
    keep_running: bool = False
    record: Path | None = None


def run_demo(options: DemoOptions, out: TextIO) -> None:
    """Tell the story on ``out``; raise `DemoError` if it could not be told as expected,
    or, before anything starts, if the recording directory cannot be written."""
    timing = QUICK if options.quick else NORMAL
    console = Console(out)
    with _recordings(options.record, fixed=options.fixed) as recordings:
        console.say("Starting a Tango control system on 127.0.0.1 ...")
        with _running_sandbox() as sandbox:
            if options.fixed:
                console.say(
                    "First the system as it is, for the comparison; run `milonga demo` to "
                    "watch this part live."
                )
                before = _tell_and_diagnose(
                    sandbox, timing, console, use_scheduler=False, live=False, record=recordings
                )
                _check(before, use_scheduler=False)
                remove_system(sandbox)
                console.say("", "Now the same system with CallbackScheduler in both devices.")
                after = _tell_and_diagnose(
                    sandbox, timing, console, use_scheduler=True, live=True, record=recordings
                )
                console.say("", "Before and after, on this machine:")
                console.say(*render_comparison(before, after, ("as it is", "with the scheduler")))
                _check(after, use_scheduler=True)
            else:
                run = _tell_and_diagnose(
                    sandbox, timing, console, use_scheduler=False, live=True, record=recordings
                )
                _check(run, use_scheduler=False)
            if recordings:
                console.say(*_report_commands(recordings))
            if options.keep_running:
                _keep_running(sandbox, timing, console)


@contextlib.contextmanager
def _recordings(directory: Path | None, *, fixed: bool) -> Iterator[dict[bool, JsonLinesWriter]]:
    """The JSON Lines files to record each run's polls in, open inside the block, by
    whether the run uses the scheduler: none without ``directory``; otherwise
    `PLAIN_RECORD`, and with ``fixed`` `FIXED_RECORD` too, in ``directory``, which is
    created if need be.  Raises `DemoError` if that or opening a file fails."""
    with contextlib.ExitStack() as stack:
        recordings: dict[bool, JsonLinesWriter] = {}
        if directory is not None:
            names = {False: PLAIN_RECORD, **({True: FIXED_RECORD} if fixed else {})}
            try:
                directory.mkdir(parents=True, exist_ok=True)
                for use_scheduler, name in names.items():
                    writer = stack.enter_context(JsonLinesWriter(directory / name))
                    recordings[use_scheduler] = writer
            except OSError as error:
                why = error.strerror
                if directory.exists() and not directory.is_dir():
                    why = "it is not a directory"
                raise DemoError(
                    f"cannot record the demo's polls in {error.filename or directory} "
                    f"({why}); give --record a directory that can be created "
                    "and written to, or leave --record out"
                ) from None
        yield recordings


def _report_commands(recordings: dict[bool, JsonLinesWriter]) -> list[str]:
    """What to tell the user about the recorded polls: where they are, and the command
    that makes the report of each run."""
    milonga = Path(sys.executable).with_name("milonga")  # this environment's
    lines = ["", "The monitor's polls are recorded; to see them as plots, make a report:"]
    for writer in recordings.values():
        lines.append(f"    {shlex.quote(str(milonga))} report {shlex.quote(str(writer.path))}")
    return lines


def _tell_and_diagnose(
    sandbox: TangoSandbox,
    timing: Timing,
    console: Console,
    *,
    use_scheduler: bool,
    live: bool,
    record: dict[bool, JsonLinesWriter],
) -> DemoRun:
    """Tell the story once and print the diagnosis, made of the reports and findings the
    monitor's loop made as it ran; record the polls in ``record[use_scheduler]``, if there."""
    scan, updates = tell(
        sandbox,
        timing,
        console,
        use_scheduler=use_scheduler,
        live=live,
        record=record.get(use_scheduler),
    )
    reports = [update.report for update in updates]
    run = DemoRun(scan, diagnose(reports, (update.findings for update in updates)))
    console.say("", *render_diagnosis(run.diagnosis), "")
    return run


def tell(
    sandbox: TangoSandbox,
    timing: Timing,
    console: Console,
    *,
    use_scheduler: bool,
    live: bool,
    record: JsonLinesWriter | None = None,
) -> tuple[ScanOutcome, list[PollUpdate]]:
    """Start the system, call `Scan()` while the monitor watches, and wait until every
    pushed event has arrived; return how `Scan()` ended and the monitor's updates (each
    poll, what changed, and the findings).

    The process's TANGO_HOST must point at ``sandbox``.  Prints the story to ``console``,
    with the snapshots if ``live``, and writes each poll to ``record``, if given, as
    `tango-event-monitor -o FILE` does.
    """
    start_system(sandbox, timing, use_scheduler=use_scheduler)
    how = "on CallbackScheduler workers" if use_scheduler else "on the event-consumer thread"
    console.say(
        f"The control system is running (TANGO_HOST={sandbox.tango_host}):",
        f"    {HW_SERVER:<12} HwDevice    {HW:<13} scans for {timing.scan_seconds:g} s, "
        f"pushing position at {timing.push_hz:g} Hz",
        f"    {TOP_SERVER:<12} TopDevice   {TOP:<13} Scan() waits up to "
        f"{timing.scan_timeout_seconds:g} s for Mode.IDLE",
        f"    {'':<12} RogueDevice {ROGUE:<13} spends {timing.handler_seconds * 1000:g} ms on "
        "each position event",
        f"    Both devices of {TOP_SERVER} run their callbacks {how}.",
    )
    _check_rogue_subscribed(sandbox)
    devices = (HW, TOP)
    period = timing.polling_period
    if live:
        console.say(
            f"Monitoring as `tango-event-monitor --monitor --polling-period {period:g} "
            f"{' '.join(devices)}` would:"
        )
    with LiveMonitor(devices, period, console if live else None, record) as monitor:
        console.say(
            f"Calling {TOP} Scan() with a {timing.client_timeout_seconds:g} s client timeout ..."
        )
        log_start = len(sandbox.server_output(HW_SERVER))
        scan = _scan(sandbox, timing)
        if scan.error is None:
            console.say(f"{TOP} Scan() returned after {scan.seconds:.1f} s.")
        else:
            console.say(f"{TOP} Scan() failed after {scan.seconds:.1f} s: {scan.error}")
        console.say(f"Meanwhile {HW} logged:", *_hw_log(sandbox, log_start))
        console.say(f"Waiting until {TOP_SERVER} has received every event {HW} pushed ...")
        if not monitor.wait_for(lambda update: caught_up(update.report), timing.catch_up_seconds):
            console.say(f"Still not there after {timing.catch_up_seconds:g} s; diagnosing anyway.")
    return scan, monitor.updates


def _check(run: DemoRun, *, use_scheduler: bool) -> None:
    """Raise `DemoError` if `Scan()` did not end as the story says it does."""
    error = run.scan.error
    if use_scheduler and error is not None:
        raise DemoError(
            f"with the scheduler, {TOP} Scan() should have returned once the scan was over, "
            f"but it failed: {error}. The machine may be too busy for the timing; "
            "try again, or without --quick"
        )
    if not use_scheduler and error is None:
        raise DemoError(
            f"{TOP} Scan() was expected to time out, but it returned after "
            f"{run.scan.seconds:.1f} s, so the demo did not reproduce the late event; "
            "please report this with the output above"
        )
    if not use_scheduler and error is not None and IDLE_TIMEOUT not in error:
        raise DemoError(
            f"{TOP} Scan() was expected to fail with {IDLE_TIMEOUT!r}, but it failed with: "
            f"{error}. The machine may be too busy for the timing; try again, or without "
            "--quick, and report it with the output above if it fails again"
        )


@contextlib.contextmanager
def _running_sandbox() -> Iterator[TangoSandbox]:
    """A started sandbox, with this process's TANGO_HOST pointing at it as a user's would;
    raises `DemoError` if it does not start.  Says so when a signal stops it, as stopping
    servers in the middle of a scan takes seconds."""
    with contextlib.ExitStack() as stack:
        try:
            sandbox = stack.enter_context(TangoSandbox())
        except SandboxError as error:
            raise cannot_start("the demo's Tango database", error) from None
        stack.enter_context(_tango_host(sandbox.tango_host))
        try:
            yield sandbox
        except (KeyboardInterrupt, Terminated):
            print(
                "milonga: stopping the control system; this can take a few seconds",
                file=sys.stderr,
                flush=True,
            )
            raise


@contextlib.contextmanager
def _tango_host(tango_host: str) -> Iterator[None]:
    """Point this process's TANGO_HOST at the sandbox."""
    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = tango_host
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TANGO_HOST"]
        else:
            os.environ["TANGO_HOST"] = previous


def _check_rogue_subscribed(sandbox: TangoSandbox) -> None:
    """Raise `DemoError` if the rogue could not subscribe to hw as it started.

    Its server is up, so its `init_device` has run: either both subscriptions are
    connected, or the rogue is in FAULT and its status says why.
    """
    rogue = sandbox.proxy(ROGUE)
    if rogue.state() == tango.DevState.FAULT:
        raise DemoError(
            f"{ROGUE} was expected to subscribe to the change events of {HW} as it started, "
            f"but it reports: {rogue.status()}. If that is a timeout, the machine may be too "
            "busy: try again when it is quieter; otherwise please report it with this message"
        )


def _scan(sandbox: TangoSandbox, timing: Timing) -> ScanOutcome:
    """Call `TopDevice.Scan()` on a thread of its own, so that Ctrl-C is not held up."""
    top = sandbox.proxy(TOP)
    top.set_timeout_millis(round(timing.client_timeout_seconds * 1000))
    done: Future[None] = Future()

    def call() -> None:
        try:
            top.Scan()
        except BaseException as error:
            done.set_exception(error)
        else:
            done.set_result(None)

    started = time.monotonic()
    threading.Thread(target=call, name="milonga-demo-scan", daemon=True).start()
    try:
        done.result()
    except tango.DevFailed as failure:
        return ScanOutcome(time.monotonic() - started, root_cause(failure))
    return ScanOutcome(time.monotonic() - started)


def _hw_log(sandbox: TangoSandbox, start: int) -> list[str]:
    """What HwDevice logged from ``start`` on, once it says that the scan is complete (or
    after a short wait)."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS

    def log() -> str:
        return sandbox.server_output(HW_SERVER)[start:]

    while SCAN_COMPLETE not in log() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return [f"    {line}" for line in log().splitlines()]


def _keep_running(sandbox: TangoSandbox, timing: Timing, console: Console) -> None:
    """Leave the system up for the user until Ctrl-C."""
    millis = round(timing.client_timeout_seconds * 1000)
    python = Path(sys.executable)  # this environment's, which has PyTango and milonga
    monitor = python.with_name("tango-event-monitor")
    console.say(
        "The control system keeps running. Follow the tutorial by hand in other terminals:",
        f"    export TANGO_HOST={sandbox.tango_host}",
        f"    {monitor} --monitor --polling-period {timing.polling_period:g} {HW} {TOP}",
        f'    {python} -c \'import tango; top = tango.DeviceProxy("{TOP}"); '
        f"top.set_timeout_millis({millis}); top.Scan()'",
        "Press Ctrl-C to stop it.",
    )
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        console.say("Stopping the control system.")
