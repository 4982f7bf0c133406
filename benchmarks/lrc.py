"""Long running command benchmarks: `invoke_lrc` with and without a connected interface.

Both variants run in the same sandbox and the same repeat, alternating, so a noisy
moment of the shared machine hits both.  The unconnected variant is the baseline: the
connected interface exists to save its subscribe/unsubscribe per invocation.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import tango
from tango.server import attribute, command

import benchmarks.scheduler  # noqa: F401  # registers its benchmarks first: the table's order
from benchmarks.harness import REGISTRY, Measurement, Options, median_of_runs
from milonga.lrc import (
    LrcDevice,
    TaskStatus,
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
    long_running_command,
)
from milonga.sandbox import TangoSandbox
from milonga.scheduler import CallbackScheduler

CHANGE = tango.EventType.CHANGE_EVENT
DEVICE = "bench/lrc/1"
SERVER = "BenchLrc/1"
WAIT_SECONDS = 30.0
ROUND_TRIPS = {True: 20, False: 100}  # by Options.quick
BACK_TO_BACK = 100
TICK_SECONDS = 0.005
"""Period of the unrelated stream whose stalls `lrc_back_to_back_100` measures."""


class BenchLrc(LrcDevice):
    """A no-op long running command, and a `ticks` stream that has nothing to do with it."""

    def init_device(self) -> None:
        super().init_device()
        self._ticks = 0
        self.set_change_event("ticks", True, False)

    @long_running_command(dtype_in=str)
    def Echo(self, text: str) -> str:
        return text

    @attribute(dtype=int)  # type: ignore[untyped-decorator]
    def ticks(self) -> int:
        """How many times `Tick` was called."""
        return self._ticks

    @command
    def Tick(self) -> None:
        """Count one tick and push it as a change event."""
        self._ticks += 1
        self.push_change_event("ticks", self._ticks)


def invoke_once(proxy: Any, scheduler: CallbackScheduler) -> float:
    """Seconds from calling `invoke_lrc` to the callback's COMPLETED."""
    done = threading.Event()

    def on_update(**kwargs: Any) -> None:
        if kwargs.get("status") is TaskStatus.COMPLETED:
            done.set()

    start = time.perf_counter()
    invoke_lrc(on_update, proxy, "Echo", ("x",), callback_scheduler=scheduler)
    if not done.wait(WAIT_SECONDS):
        raise RuntimeError(f"Echo on {DEVICE} did not complete within {WAIT_SECONDS:g} s")
    return time.perf_counter() - start


@contextmanager
def lrc_interface(proxy: Any, scheduler: CallbackScheduler, connected: bool) -> Iterator[None]:
    """The device's LRC interface kept connected for the block, or not."""
    if connected:
        connect_lrc_interface(proxy, scheduler)
    try:
        yield
    finally:
        if connected:
            disconnect_lrc_interface(proxy, scheduler)


@contextmanager
def ticking(sandbox: TangoSandbox) -> Iterator[Callable[[], float]]:
    """Tick the device every `TICK_SECONDS` and receive the ticks with raw PyTango; yields a
    function that returns the longest gap between two received ticks so far, in seconds."""
    arrivals: list[float] = []
    subscriber = sandbox.proxy(DEVICE)
    subscription = subscriber.subscribe_event(
        "ticks", CHANGE, lambda _: arrivals.append(time.perf_counter())
    )
    stop = threading.Event()

    def tick() -> None:
        ticker = sandbox.proxy(DEVICE)
        while not stop.wait(TICK_SECONDS):
            ticker.Tick()

    thread = threading.Thread(target=tick, name="bench-lrc-ticker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(arrivals) < 3:  # the stream is flowing: measure from here
            if time.monotonic() > deadline:
                raise RuntimeError(f"no ticks from {DEVICE} within {WAIT_SECONDS:g} s")
            time.sleep(TICK_SECONDS)
        arrivals.clear()
        yield lambda: max((b - a for a, b in itertools.pairwise(arrivals)), default=0)
    finally:
        stop.set()
        thread.join()
        subscriber.unsubscribe_event(subscription)


def round_trip_once(sandbox: TangoSandbox, connected: bool, count: int) -> float:
    """Median milliseconds of ``count`` no-op round trips."""
    proxy = sandbox.proxy(DEVICE)
    with (
        CallbackScheduler(thread_count=2, name="bench-lrc") as scheduler,
        lrc_interface(proxy, scheduler, connected),
    ):
        return 1000 * statistics.median(invoke_once(proxy, scheduler) for _ in range(count))


def back_to_back_once(sandbox: TangoSandbox, connected: bool) -> dict[str, float]:
    """Seconds for `BACK_TO_BACK` invocations in a row, and the longest tick gap meanwhile."""
    proxy = sandbox.proxy(DEVICE)
    with (
        CallbackScheduler(thread_count=2, name="bench-lrc") as scheduler,
        lrc_interface(proxy, scheduler, connected),
        ticking(sandbox) as longest_gap,
    ):
        start = time.perf_counter()
        for _ in range(BACK_TO_BACK):
            invoke_once(proxy, scheduler)
        return {"total_s": time.perf_counter() - start, "stall_ms": 1000 * longest_gap()}


@contextmanager
def bench_device() -> Iterator[TangoSandbox]:
    with TangoSandbox() as sandbox:
        sandbox.add_device(SERVER, "BenchLrc", DEVICE)
        sandbox.start_servers({SERVER: "benchmarks.lrc"})
        yield sandbox


@REGISTRY.add(
    "lrc_round_trip",
    "invoke_lrc of a no-op command to its COMPLETED callback, with a connected LRC "
    "interface vs without",
)
def lrc_round_trip(options: Options) -> list[Measurement]:
    count = ROUND_TRIPS[options.quick]
    with bench_device() as sandbox:
        runs = [
            {
                "unconnected": round_trip_once(sandbox, False, count),
                "connected": round_trip_once(sandbox, True, count),
            }
            for _ in range(options.repeats)
        ]
    median = median_of_runs(runs)
    return [
        Measurement("lrc_round_trip", "unconnected median", median["unconnected"], "ms"),
        Measurement(
            "lrc_round_trip", "connected median", median["connected"], "ms",
            baseline=median["unconnected"],
        ),
    ]  # fmt: skip


@REGISTRY.add(
    "lrc_back_to_back_100",
    f"{BACK_TO_BACK} invocations in a row, and the longest gap they cause in an unrelated "
    f"{1 / TICK_SECONDS:g} Hz stream, with a connected LRC interface vs without",
)
def lrc_back_to_back_100(options: Options) -> list[Measurement]:
    with bench_device() as sandbox:
        runs = []
        for _ in range(options.repeats):
            unconnected = back_to_back_once(sandbox, False)
            connected = back_to_back_once(sandbox, True)
            runs.append({f"unconnected {k}": v for k, v in unconnected.items()}
                        | {f"connected {k}": v for k, v in connected.items()})  # fmt: skip
    median = median_of_runs(runs)
    name = "lrc_back_to_back_100"
    return [
        Measurement(name, "unconnected total", median["unconnected total_s"], "s"),
        Measurement(name, "connected total", median["connected total_s"], "s",
                    baseline=median["unconnected total_s"]),
        Measurement(name, "unconnected longest tick gap", median["unconnected stall_ms"], "ms"),
        Measurement(name, "connected longest tick gap", median["connected stall_ms"], "ms",
                    baseline=median["unconnected stall_ms"]),
    ]  # fmt: skip
