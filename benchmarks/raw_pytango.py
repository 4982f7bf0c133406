"""The raw-PyTango baselines: plain ``subscribe_event`` callbacks, no milonga in between.

Each benchmark starts its own `TangoSandbox`, and unsubscribes everything and drops every
proxy before the sandbox stops its servers.

The measuring functions take the subscribe step as a `Subscribe` argument (`subscribed` by
default), so that `benchmarks.scheduler` measures the CallbackScheduler with the very same
code, only routing the callbacks through a scheduler.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import tango

from benchmarks.devices import VALUE_ATTRIBUTES
from benchmarks.harness import (
    REGISTRY,
    Measurement,
    Nudge,
    Options,
    median_of_runs,
    percentile,
    wait_until,
)
from milonga.monitor import Subscription, parse_snapshot, query_process
from milonga.monitor.snapshot import short_name
from milonga.sandbox import TangoSandbox

DEVICES = "benchmarks.devices"
EventCallback = Callable[[tango.EventData], None]
Subscribe = Callable[[Any, str, EventCallback], AbstractContextManager[object]]
"""Subscribe ``(proxy, attribute, callback)`` to change events for the ``with`` block; the
callback has handled the attribute's current value when the block starts."""

# catching up with what a device pushed (see catch_up)
NUDGE_SECONDS = 1.0
CATCH_UP_POLL_SECONDS = 0.02
CATCH_UP_TIMEOUT_SECONDS = 60.0

# noop_callback_rate
QUICK_BURST = 20_000
FULL_BURST = 100_000
BURST_TIMEOUT_MILLIS = 60_000

# slow_callback_latency
SLOW_HZ = 10.0
FAST_HZ = 20.0
SLOW_CALLBACK_SECONDS = 0.3
QUICK_WINDOW_SECONDS = 2.0
FULL_WINDOW_SECONDS = 5.0
DRAIN_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 60.0

# sync_read_subscribe_200
SUBSCRIBE_SERVERS = 10


@contextmanager
def subscribed(proxy: Any, attribute: str, callback: EventCallback) -> Iterator[int]:
    """Subscribe ``callback`` to change events of ``attribute`` (SyncRead, so the current
    value arrives before this returns); unsubscribe on exit."""
    event_id: int = proxy.subscribe_event(
        attribute, tango.EventType.CHANGE_EVENT, callback, sub_mode=tango.EventSubMode.SyncRead
    )
    try:
        yield event_id
    finally:
        proxy.unsubscribe_event(event_id)


def reading(event: tango.EventData) -> Any:
    """The ``tango.DeviceAttribute`` of an event that is not an error.

    Typed Any: PyTango's stubs declare ``EventData.attr_value`` as None and give
    ``DeviceAttribute`` no ``value``.
    """
    return event.attr_value


def stop_ticker(proxy: Any) -> None:
    """Stop a `BenchTicker`'s pumps and return once they pushed their last event."""
    proxy.command_inout("Stop")
    wait_until(
        lambda: not proxy.read_attribute("pumping").value,
        STOP_TIMEOUT_SECONDS,
        "the ticker's pumps stopping",
    )


# -- catching up with what a device pushed ---------------------------------------------


def tango_callbacks(device: str, attribute: str) -> list[Subscription]:
    """cppTango's client-side bookkeeping (``query_event_system``) of the change events of
    ``device``'s ``attribute`` in this process: one entry per subscribed topic, none once
    every subscription to them is gone."""
    client = query_process().client
    if client is None:
        return []
    topic = f"{device}/{attribute}.idl5_change".lower()
    return [
        subscription
        for name, subscription in client.subscriptions.items()
        if short_name(name).lower() == topic
    ]


def received_counter(device: str, attribute: str) -> int | None:
    """The server counter of the last change event of ``device``'s ``attribute`` that this
    process's cppTango took in; None without a subscription to it."""
    return max((entry.server_counter for entry in tango_callbacks(device, attribute)), default=None)


def published_counter(admin: Any, device: str, attribute: str) -> int:
    """The server counter of the last change event pushed on ``device``'s ``attribute``,
    from ``QueryEventSystem`` on ``admin``, a proxy to the admin device of its server."""
    server = parse_snapshot(admin.command_inout("QueryEventSystem")).server
    stream = f"{device}/{attribute}.change".lower()
    counters = [
        counter
        for name, counter in (server.publishers if server else {}).items()
        if short_name(name).lower() == stream
    ]
    if not counters:
        raise RuntimeError(f"{admin.name()} reports no change events of {device}/{attribute}")
    return counters[0]


def catch_up(proxy: Any, attribute: str) -> None:
    """Return once this process's cppTango has taken in the last change event pushed on
    ``attribute`` of ``proxy``'s device: every earlier event has then arrived, or is lost
    for good.  The device must be a `BenchPublisher` or a stopped `BenchTicker`.

    Events pushed faster than this process takes them in fill the ZMQ queues, which then
    drop the newest, so the last event pushed may never arrive.  Whenever cppTango takes in
    nothing for NUDGE_SECONDS short of it, the device pushes one more (``Mark``), and this
    waits for that one instead: ZMQ keeps the order, so it comes after every earlier event
    still on the way.  The pause only paces those extra pushes; the wait itself ends on
    cppTango's counters, on a machine of any speed.
    """
    device = proxy.dev_name()
    admin = tango.DeviceProxy(proxy.adm_name())
    last = [published_counter(admin, device, attribute)]

    def mark() -> None:
        proxy.command_inout("Mark", attribute)
        last[0] = published_counter(admin, device, attribute)

    wait_until(
        lambda: received_counter(device, attribute) == last[0],
        CATCH_UP_TIMEOUT_SECONDS,
        f"cppTango taking in the last event pushed on {device}/{attribute}",
        nudge=Nudge(lambda: received_counter(device, attribute), mark, NUDGE_SECONDS),
        poll_seconds=CATCH_UP_POLL_SECONDS,
    )


# -- noop_callback_rate ----------------------------------------------------------------


class BurstCounter:
    """A callback that counts the events of a burst and notes the first and last arrival.

    Call `expect` before each burst of the values 1 ... ``burst``; it counts no other
    value, such as the ones `catch_up` adds.  `latest` is the last value it received.
    """

    def __init__(self) -> None:
        self.expect(0)

    def expect(self, burst: int) -> None:
        self.burst = burst
        self.delivered = 0
        self.first_arrival = self.last_arrival = 0.0
        self.latest: int | None = None

    def __call__(self, event: tango.EventData) -> None:
        now = time.perf_counter()
        if event.err:
            return
        value = int(reading(event).value)
        if 0 < value <= self.burst:
            if self.delivered == 0:
                self.first_arrival = now
            self.delivered += 1
            self.last_arrival = now
        self.latest = value


def burst_once(proxy: Any, counter: BurstCounter, burst: int) -> dict[str, float]:
    """Push ``burst`` events into ``counter``, subscribed already, and wait until it has
    handled the last event that reaches it; return the delivered rate (events/s) and how
    many of the pushed events it did not get ("lost")."""
    proxy.set_timeout_millis(BURST_TIMEOUT_MILLIS)
    counter.expect(burst)
    proxy.command_inout("Burst", burst)
    catch_up(proxy, "counter")
    last = int(proxy.read_attribute("counter").value)
    wait_until(
        lambda: counter.latest == last,
        CATCH_UP_TIMEOUT_SECONDS,
        "the callback handling the last event",
    )
    span = counter.last_arrival - counter.first_arrival
    return {
        "rate": counter.delivered / span if span > 0 else 0.0,
        "lost": burst - counter.delivered,
    }


def _burst_runs(proxy: Any, burst: int, repeats: int) -> list[dict[str, float]]:
    counter = BurstCounter()
    with subscribed(proxy, "counter", counter):
        return [burst_once(proxy, counter, burst) for _ in range(repeats)]


@REGISTRY.add(
    "noop_callback_rate",
    "events/s reaching a no-op callback while one server pushes bursts as fast as it can",
)
def noop_callback_rate(options: Options) -> list[Measurement]:
    burst = QUICK_BURST if options.quick else FULL_BURST
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchPublisher/noop", "BenchPublisher")
        runs = _burst_runs(proxy, burst, options.repeats)
        del proxy  # before the server stops
    result = median_of_runs(runs)
    name = "noop_callback_rate"
    return [
        Measurement(name, "delivered rate", result["rate"], "events/s"),
        Measurement(name, f"lost of {burst:,} pushed", result["lost"], "events"),
    ]


# -- slow_callback_latency -------------------------------------------------------------


class SlowCallback:
    """Sleeps SLOW_CALLBACK_SECONDS per event while `sleeping` is set."""

    def __init__(self) -> None:
        self.sleeping = threading.Event()

    def __call__(self, event: tango.EventData) -> None:
        if self.sleeping.is_set():
            time.sleep(SLOW_CALLBACK_SECONDS)


class LatencyRecorder:
    """Records (push time, latency) of each event; `caught_up` is set by an event pushed
    after `caught_up_after`."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.caught_up_after = float("inf")
        self.caught_up = threading.Event()

    def __call__(self, event: tango.EventData) -> None:
        received = time.time()
        if event.err:
            return
        pushed = reading(event).time.totime()
        self.samples.append((pushed, received - pushed))
        if pushed > self.caught_up_after:
            self.caught_up.set()


def latencies_once(
    proxy: Any,
    window: float,
    *,
    fast_hz: float = FAST_HZ,
    subscribe: Subscribe = subscribed,
) -> dict[str, float]:
    """Feed the slow callback at SLOW_HZ and the latency recorder at ``fast_hz`` for
    ``window`` seconds; return the fast stream's latency statistics (ms) and their growth
    per slow event (ms)."""
    slow, fast = SlowCallback(), LatencyRecorder()
    with subscribe(proxy, "slow", slow), subscribe(proxy, "fast", fast):
        slow.sleeping.set()
        start = time.time()
        proxy.command_inout("Start", [SLOW_HZ, fast_hz])
        try:
            time.sleep(window)
            fast.caught_up_after = end = time.time()
            slow.sleeping.clear()
            caught_up = fast.caught_up.wait(DRAIN_TIMEOUT_SECONDS)
        finally:
            slow.sleeping.clear()
            stop_ticker(proxy)
    if not caught_up:
        raise RuntimeError(
            f"the fast stream did not catch up within {DRAIN_TIMEOUT_SECONDS:g} s after the "
            "slow callback stopped sleeping; is the machine overloaded?"
        )
    in_window = [(pushed, latency) for pushed, latency in fast.samples if start <= pushed <= end]
    latencies = [latency for _, latency in in_window]
    # Latency grows linearly with push time while the slow callback sleeps (events
    # received before `end`); the slope per slow event is independent of the window.
    while_slow = [(pushed, latency) for pushed, latency in in_window if pushed + latency < end]
    growth = statistics.linear_regression(
        [pushed for pushed, _ in while_slow], [latency for _, latency in while_slow]
    ).slope
    return {
        "latency median": 1000 * statistics.median(latencies),
        "latency p99": 1000 * percentile(latencies, 0.99),
        "latency max": 1000 * max(latencies),
        "growth": 1000 * growth / SLOW_HZ,
    }


@REGISTRY.add(
    "slow_callback_latency",
    f"latency of a {FAST_HZ:g} Hz stream sharing the event thread with a "
    f"{SLOW_CALLBACK_SECONDS * 1000:.0f} ms callback fed at {SLOW_HZ:g} Hz",
)
def slow_callback_latency(options: Options) -> list[Measurement]:
    window = QUICK_WINDOW_SECONDS if options.quick else FULL_WINDOW_SECONDS
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchTicker/latency", "BenchTicker")
        runs = [latencies_once(proxy, window) for _ in range(options.repeats)]
        del proxy  # before the server stops
    result = median_of_runs(runs)
    name = "slow_callback_latency"
    return [
        *(
            Measurement(name, f"fast {statistic} ({window:g} s window)", result[statistic], "ms")
            for statistic in ("latency median", "latency p99", "latency max")
        ),
        Measurement(name, "fast latency growth per slow event", result["growth"], "ms"),
    ]


# -- sync_read_subscribe_200 -----------------------------------------------------------


def ignore(event: tango.EventData) -> None:
    """A callback that does nothing."""


def start_bench_device(sandbox: TangoSandbox, server: str, device_class: str) -> Any:
    """Start ``server`` with one ``device_class`` device and return a proxy to it.  The
    device is ``bench/<name>/1``, <name> being the class name without ``Bench``, lower case."""
    device = f"bench/{device_class.removeprefix('Bench').lower()}/1"
    sandbox.add_device(server, device_class, device)
    sandbox.start_servers({server: DEVICES})
    return sandbox.proxy(device)


def start_attrs_servers(sandbox: TangoSandbox, count: int) -> list[str]:
    """Start ``count`` servers of one `BenchAttrs` device each; return the device names."""
    devices = [f"bench/attrs/{index}" for index in range(1, count + 1)]
    servers = [f"BenchAttrs/{index}" for index in range(1, count + 1)]
    for server, device in zip(servers, devices, strict=True):
        sandbox.add_device(server, "BenchAttrs", device)
    sandbox.start_servers(dict.fromkeys(servers, DEVICES))
    return devices


def subscribe_all_once(proxies: list[Any]) -> dict[str, float]:
    """Subscribe to every attribute of ``proxies`` in turn (SyncRead), then unsubscribe:
    the total seconds and the median ms of one subscription."""
    durations: list[float] = []
    subscriptions: list[tuple[Any, int]] = []
    try:
        start = time.perf_counter()
        for proxy in proxies:
            for attribute in VALUE_ATTRIBUTES:
                before = time.perf_counter()
                event_id = proxy.subscribe_event(
                    attribute,
                    tango.EventType.CHANGE_EVENT,
                    ignore,
                    sub_mode=tango.EventSubMode.SyncRead,
                )
                durations.append(time.perf_counter() - before)
                subscriptions.append((proxy, event_id))
        total = time.perf_counter() - start
    finally:
        for proxy, event_id in subscriptions:
            proxy.unsubscribe_event(event_id)
    return {"total": total, "each": 1000 * statistics.median(durations)}


@REGISTRY.add(
    "sync_read_subscribe_200",
    f"sequential SyncRead subscriptions to {SUBSCRIBE_SERVERS * len(VALUE_ATTRIBUTES)} "
    f"attributes on {SUBSCRIBE_SERVERS} servers",
)
def sync_read_subscribe_200(options: Options) -> list[Measurement]:
    with TangoSandbox() as sandbox:
        devices = start_attrs_servers(sandbox, SUBSCRIBE_SERVERS)
        proxies = [sandbox.proxy(device) for device in devices]
        runs = [subscribe_all_once(proxies) for _ in range(options.repeats)]
        del proxies  # before the servers stop
    result = median_of_runs(runs)
    name = "sync_read_subscribe_200"
    return [
        Measurement(name, "total", result["total"], "s"),
        Measurement(name, "per subscription (median)", result["each"], "ms"),
    ]
