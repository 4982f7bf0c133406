"""The CallbackScheduler benchmarks, each measured side by side with raw PyTango.

Every benchmark measures raw PyTango again in the same sandbox and the same run, and
reports it as the `Measurement.baseline`.  Where `benchmarks.raw_pytango` has the
measuring function, the scheduler variant calls that very function with the subscribe
step swapped: `through` routes the callbacks through a scheduler instead of passing them
to ``subscribe_event``.  Variants alternate within each repeat, so that a noisy moment of
the shared machine hits both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from queue import SimpleQueue
from typing import Any, NamedTuple

import psutil
import tango

from benchmarks.devices import VALUE_ATTRIBUTES
from benchmarks.harness import (
    REGISTRY,
    Measurement,
    Options,
    median_of_runs,
    percentile,
    wait_until,
)
from benchmarks.raw_pytango import (
    CATCH_UP_TIMEOUT_SECONDS,
    FULL_BURST,
    FULL_WINDOW_SECONDS,
    QUICK_BURST,
    QUICK_WINDOW_SECONDS,
    SLOW_CALLBACK_SECONDS,
    SLOW_HZ,
    SUBSCRIBE_SERVERS,
    BurstCounter,
    EventCallback,
    Subscribe,
    burst_once,
    catch_up,
    ignore,
    latencies_once,
    reading,
    start_attrs_servers,
    start_bench_device,
    stop_ticker,
    subscribe_all_once,
    subscribed,
    tango_callbacks,
)
from milonga.sandbox import TangoSandbox
from milonga.scheduler import (
    DEFAULT_QUEUE_SIZE,
    CallbackID,
    CallbackScheduler,
    EventQueue,
    QueuedEvent,
    QueueStats,
)
from milonga.scheduler.base import SchedulerBase
from milonga.scheduler.dispatch import Dispatcher, Run

CHANGE = tango.EventType.CHANGE_EVENT
SUBSCRIBE_TIMEOUT_SECONDS = 60.0

# scheduler_fairness
MEASURED_HZ = 5.0
FAIRNESS_THREADS = (2, 1)

# scheduler_handoff
HANDOFF_HZ = 1000.0
QUICK_HANDOFF_SECONDS = 0.5
FULL_HANDOFF_SECONDS = 1.0  # 1,000 events: all within the stats' 1,024-event window

# scheduler_flood
FLOOD_HZ = 10_000.0
QUICK_FLOOD_SECONDS = 5.0
FULL_FLOOD_SECONDS = 60.0
RSS_SAMPLE_SECONDS = 0.25
MISSED_EVENTS = "API_MissedEvents"

# scheduler_busy_queues
BUSY_QUEUES = 200
QUICK_DISPATCH_EVENTS = 20_000
FULL_DISPATCH_EVENTS = 100_000


# -- the subscribe step, through a scheduler ---------------------------------------------


def queue_stats(sched: SchedulerBase, callback_id: CallbackID) -> QueueStats:
    """The statistics of the queue that serves ``callback_id``'s stream."""
    stream = str(callback_id.stream)
    return next(queue for queue in sched.stats().queues if stream in queue.streams)


def sized_queue(
    sched: SchedulerBase, queue_size: int | None
) -> Callable[[], EventQueue[QueuedEvent]] | None:
    """A ``queue_factory`` for queues of ``queue_size`` events; None for the default."""
    if queue_size is None:
        return None
    return lambda: sched.allocate_queue(queue_size=queue_size)


@contextmanager
def registered(
    sched: CallbackScheduler,
    device: Any,
    attribute: str,
    callback: EventCallback,
    *,
    queue_size: int | None = None,
) -> Iterator[CallbackID]:
    """Register ``callback`` for change events of ``attribute``, in a queue of
    ``queue_size`` events (default size if None); see `held`."""
    registration = sched.register_event_callback(
        device, attribute, CHANGE, callback, queue_factory=sized_queue(sched, queue_size)
    )
    with held(sched, registration.result(SUBSCRIBE_TIMEOUT_SECONDS)) as callback_id:
        yield callback_id


@contextmanager
def held(sched: SchedulerBase, callback_id: CallbackID) -> Iterator[CallbackID]:
    """Hold the registration ``callback_id`` of ``sched`` for the block; unregister it,
    and wait until the stream is unsubscribed, on exit.

    Like a SyncRead subscription, the block starts once the callback has handled the
    current value: the registration resolves when the stream is connected, which may be
    before the callback has run with that first event, so this also waits until the
    queue's statistics time a callback (recorded once it returned).
    """
    try:
        wait_until(
            lambda: queue_stats(sched, callback_id).callback_p50 is not None,
            SUBSCRIBE_TIMEOUT_SECONDS,
            f"the first callback on {callback_id.stream}",
        )
        yield callback_id
    finally:
        sched.unregister_callback(callback_id)
        # The scheduler unsubscribes a stream left without callbacks a second later
        # (UNUSED_STREAM_GRACE_SECONDS), on a thread of its own: wait until cppTango has
        # dropped the subscription, so that the next variant starts without it.
        stream = callback_id.stream
        wait_until(
            lambda: not tango_callbacks(stream.device_trl.split("/", 3)[-1], stream.attr_name),
            SUBSCRIBE_TIMEOUT_SECONDS,
            f"unsubscribing from {stream}",
        )


def through(sched: CallbackScheduler, queue_size: int | None = None) -> Subscribe:
    """The subscribe step of `benchmarks.raw_pytango`'s measuring functions, with the
    callbacks routed through ``sched`` (see `registered`)."""

    def subscribe(
        proxy: Any, attribute: str, callback: EventCallback
    ) -> AbstractContextManager[CallbackID]:
        return registered(sched, proxy, attribute, callback, queue_size=queue_size)

    return subscribe


# -- scheduler_fairness ------------------------------------------------------------------


def _fairness_once(proxy: Any, window: float, thread_count: int | None) -> dict[str, float]:
    """One window of the tutorial load: raw if ``thread_count`` is None, else scheduled."""
    if thread_count is None:
        return latencies_once(proxy, window, fast_hz=MEASURED_HZ)
    with CallbackScheduler(thread_count=thread_count, name="bench-fairness") as sched:
        return latencies_once(proxy, window, fast_hz=MEASURED_HZ, subscribe=through(sched))


def fairness(window: float, repeats: int) -> list[Measurement]:
    """The fast stream's latency with 2 and 1 workers, against raw PyTango as baseline."""
    variants: tuple[int | None, ...] = (None, *FAIRNESS_THREADS)
    runs: dict[int | None, list[dict[str, float]]] = {variant: [] for variant in variants}
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchTicker/fairness", "BenchTicker")
        for _ in range(repeats):
            for variant in variants:
                runs[variant].append(_fairness_once(proxy, window, variant))
        del proxy  # before the server stops
    raw = median_of_runs(runs[None])
    name = "scheduler_fairness"
    measurements = []
    for threads in FAIRNESS_THREADS:
        result = median_of_runs(runs[threads])
        label = f"{threads} thread{'s' if threads > 1 else ''}"
        for statistic in ("median", "p99", "max"):
            key = f"latency {statistic}"
            measurements.append(
                Measurement(name, f"latency {statistic}, {label}", result[key], "ms", raw[key])
            )
        measurements.append(
            Measurement(
                name, f"growth per slow event, {label}", result["growth"], "ms", raw["growth"]
            )
        )
    return measurements


@REGISTRY.add(
    "scheduler_fairness",
    f"latency of a {MEASURED_HZ:g} Hz stream next to a {SLOW_CALLBACK_SECONDS * 1000:.0f} ms "
    f"callback fed at {SLOW_HZ:g} Hz, scheduler with 2 and 1 threads vs raw",
)
def scheduler_fairness(options: Options) -> list[Measurement]:
    window = QUICK_WINDOW_SECONDS if options.quick else FULL_WINDOW_SECONDS
    return fairness(window, options.repeats)


# -- the floor: a bare handoff from Tango's thread ---------------------------------------


class BareHandoff:
    """The least a handoff from Tango's thread to another thread costs in Python: the floor
    of any design that keeps user code off Tango's thread.

    Tango's callback puts the event and its `time.monotonic` into a `queue.SimpleQueue`;
    one thread takes them off with a blocking ``get``, records in `delays` the time from the
    put to the moment it holds the event (the scheduler's queueing delay, minus the
    scheduler) and calls ``callback`` with it, by default one that notes `last_value`.
    `close` stops the thread once it has handled every event put before.

    Of the handoffs a new user would write, this one delivered the most no-op events per
    second in `scheduler_noop_rate`'s bursts (BENCHMARKS.md compares them), so it is the
    floor; `KIND` names it in the table.
    """

    KIND = "queue.SimpleQueue"

    def __init__(self, callback: EventCallback | None = None) -> None:
        self.delays: list[float] = []
        self.last_value = 0
        self._callback = callback or self._note_value
        self._waiting: SimpleQueue[tuple[tango.EventData, float] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="bench-bare-handoff")
        self._thread.start()

    def __call__(self, event: tango.EventData) -> None:
        self._waiting.put((event, time.monotonic()))

    def close(self) -> None:
        self._waiting.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (waiting := self._waiting.get()) is not None:
            event, put_at = waiting
            self.delays.append(time.monotonic() - put_at)
            self._callback(event)

    def _note_value(self, event: tango.EventData) -> None:
        if not event.err:
            self.last_value = reading(event).value


# -- scheduler_noop_rate -----------------------------------------------------------------


def burst_through(proxy: Any, burst: int, queue_size: int | None) -> dict[str, float]:
    """One burst into a no-op callback through a new scheduler with queues of
    ``queue_size``; "lost" counts only events lost before the queue, "dropped" the queue's."""
    counter = BurstCounter()
    with (
        CallbackScheduler(name="bench-noop") as sched,
        registered(sched, proxy, "counter", counter, queue_size=queue_size) as callback_id,
    ):
        run = burst_once(proxy, counter, burst)
        run["dropped"] = queue_stats(sched, callback_id).dropped
    run["lost"] -= run["dropped"]
    return run


def burst_raw(proxy: Any, burst: int) -> dict[str, float]:
    """One burst into a plain no-op callback on Tango's thread (raw PyTango)."""
    counter = BurstCounter()
    with subscribed(proxy, "counter", counter):
        return burst_once(proxy, counter, burst)


def _burst_bare(proxy: Any, burst: int) -> dict[str, float]:
    """One burst into a no-op callback that a bare handoff runs on another thread."""
    counter = BurstCounter()
    bare = BareHandoff(counter)
    try:
        with subscribed(proxy, "counter", bare):
            return burst_once(proxy, counter, burst)
    finally:
        bare.close()


def noop_rate(burst: int, repeats: int) -> list[Measurement]:
    """Delivered rate and losses with a queue holding the whole burst and with the default
    queue, and the rate of a bare handoff (the floor), against raw PyTango as baseline."""
    raw_runs, whole_runs, default_runs, bare_runs = [], [], [], []
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchPublisher/noop", "BenchPublisher")
        for _ in range(repeats):
            raw_runs.append(burst_raw(proxy, burst))
            whole_runs.append(burst_through(proxy, burst, burst))
            default_runs.append(burst_through(proxy, burst, None))
            bare_runs.append(_burst_bare(proxy, burst))
        del proxy  # before the server stops
    raw, whole, default, bare = map(median_of_runs, (raw_runs, whole_runs, default_runs, bare_runs))
    name = "scheduler_noop_rate"
    size = f"queue of {burst:,}"
    return [
        Measurement(name, f"delivered rate, {size}", whole["rate"], "events/s", raw["rate"]),
        Measurement(
            name, f"lost in Tango of {burst:,}, {size}", whole["lost"], "events", raw["lost"]
        ),
        Measurement(name, f"dropped by the {size}", whole["dropped"], "events"),
        Measurement(
            name,
            f"lost in Tango, queue of {DEFAULT_QUEUE_SIZE}",
            default["lost"],
            "events",
            raw["lost"],
        ),
        Measurement(
            name, f"dropped by the queue of {DEFAULT_QUEUE_SIZE}", default["dropped"], "events"
        ),
        Measurement(
            name,
            f"delivered rate, bare handoff, {BareHandoff.KIND} (floor)",
            bare["rate"],
            "events/s",
            raw["rate"],
        ),
    ]


@REGISTRY.add(
    "scheduler_noop_rate",
    "events/s reaching a no-op callback through the scheduler vs raw, bursts as fast as possible",
)
def scheduler_noop_rate(options: Options) -> list[Measurement]:
    return noop_rate(QUICK_BURST if options.quick else FULL_BURST, options.repeats)


# -- scheduler_handoff -------------------------------------------------------------------


class HandoffTimer:
    """Records, per event, the seconds from Tango's reception of it to this callback's start.

    ``reception_date`` is taken by cppTango when the event arrives, before PyTango converts
    it for Python; both clocks are the wall clock, with microsecond resolution.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.last_value = 0

    def __call__(self, event: tango.EventData) -> None:
        started = time.time()
        if event.err:
            return
        self.delays.append(started - event.reception_date.totime())
        self.last_value = reading(event).value


def tick(proxy: Any, timer: HandoffTimer | BareHandoff, seconds: float) -> None:
    """Push ``fast`` at HANDOFF_HZ for ``seconds`` into ``timer``, subscribed already, and
    wait until the last event reached it.  Forgets the events before the first push."""
    timer.delays.clear()
    proxy.command_inout("Start", [0.0, HANDOFF_HZ])
    try:
        time.sleep(seconds)
    finally:
        stop_ticker(proxy)
    last = proxy.read_attribute("fast").value
    wait_until(lambda: timer.last_value == last, SUBSCRIBE_TIMEOUT_SECONDS, "the last event")


def micros(delays: list[float]) -> dict[str, float]:
    """The "p50" and "p99" of ``delays`` (seconds), in µs."""
    return {"p50": 1e6 * percentile(delays, 0.5), "p99": 1e6 * percentile(delays, 0.99)}


def _handoff_raw(proxy: Any, seconds: float) -> dict[str, float]:
    """Raw PyTango: reception to a direct callback, and the bare handoff (`BareHandoff`)."""
    timer, bare = HandoffTimer(), BareHandoff()
    try:
        with subscribed(proxy, "fast", timer):
            tick(proxy, timer, seconds)
        with subscribed(proxy, "fast", bare):
            tick(proxy, bare, seconds)
    finally:
        bare.close()
    bare_micros = micros(bare.delays)
    return {
        **micros(timer.delays),
        "queue p50": bare_micros["p50"],
        "queue p99": bare_micros["p99"],
    }


def _handoff_through(proxy: Any, seconds: float) -> dict[str, float]:
    """The scheduler: reception to the user's callback, and the queueing delay its
    statistics report over the same events."""
    timer = HandoffTimer()
    with (
        CallbackScheduler(name="bench-handoff") as sched,
        registered(sched, proxy, "fast", timer) as callback_id,
    ):
        tick(proxy, timer, seconds)
        stats = queue_stats(sched, callback_id)
    assert stats.queueing_delay_p50 is not None
    assert stats.queueing_delay_p99 is not None
    return {
        **micros(timer.delays),
        "queue p50": 1e6 * stats.queueing_delay_p50,
        "queue p99": 1e6 * stats.queueing_delay_p99,
    }


def handoff(seconds: float, repeats: int) -> list[Measurement]:
    """At HANDOFF_HZ: the scheduler's queueing delay against the bare handoff (`BareHandoff`)
    from a raw callback, and reception-to-callback times against a direct raw callback."""
    raw_runs, sched_runs = [], []
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchTicker/handoff", "BenchTicker")
        for _ in range(repeats):
            raw_runs.append(_handoff_raw(proxy, seconds))
            sched_runs.append(_handoff_through(proxy, seconds))
        del proxy  # before the server stops
    raw, sched = median_of_runs(raw_runs), median_of_runs(sched_runs)
    name = "scheduler_handoff"
    return [
        Measurement(name, f"queueing delay {key[6:]} (stats)", sched[key], "µs", raw[key])
        for key in ("queue p50", "queue p99")
    ] + [
        Measurement(name, f"reception to callback {key}", sched[key], "µs", raw[key])
        for key in ("p50", "p99")
    ]


@REGISTRY.add(
    "scheduler_handoff",
    f"time from Tango's callback to the user's callback at {HANDOFF_HZ:g} Hz",
)
def scheduler_handoff(options: Options) -> list[Measurement]:
    return handoff(
        QUICK_HANDOFF_SECONDS if options.quick else FULL_HANDOFF_SECONDS, options.repeats
    )


# -- scheduler_subscribe_200 -------------------------------------------------------------


def register_all_once(trls: list[str]) -> dict[str, float]:
    """Register a callback for every attribute of the devices ``trls`` through a new
    scheduler, all at once, then wait for every registration: total seconds, and the ms
    it took to issue the calls."""
    with CallbackScheduler(name="bench-subscribe") as sched:
        start = time.perf_counter()
        registrations = [
            sched.register_event_callback(trl, attribute, CHANGE, ignore)
            for trl in trls
            for attribute in VALUE_ATTRIBUTES
        ]
        issued = time.perf_counter() - start
        for registration in registrations:
            registration.result(SUBSCRIBE_TIMEOUT_SECONDS)
        total = time.perf_counter() - start
    return {"total": total, "issued": 1000 * issued}


def async_all_once(proxies: list[Any], mode: tango.EventSubMode) -> dict[str, float]:
    """Subscribe to every attribute of ``proxies`` with raw asynchronous ``mode`` calls, all
    at once, and wait until each callback got its first event: total seconds.  With
    AsyncRead, what any client built on it needs at least, with the proxies built
    already; with Async, the same without reading the current values."""
    arrived = threading.Semaphore(0)

    def first(event: tango.EventData) -> None:
        arrived.release()

    subscriptions: list[tuple[Any, int]] = []
    try:
        start = time.perf_counter()
        for proxy in proxies:
            for attribute in VALUE_ATTRIBUTES:
                event_id = proxy.subscribe_event(attribute, CHANGE, first, sub_mode=mode)
                subscriptions.append((proxy, event_id))
        for _ in subscriptions:
            if not arrived.acquire(timeout=SUBSCRIBE_TIMEOUT_SECONDS):
                raise RuntimeError(f"an {mode} subscription sent no event")
        total = time.perf_counter() - start
    finally:
        for proxy, event_id in subscriptions:
            proxy.unsubscribe_event(event_id)
    return {"total": total}


def subscribe_many(servers: int, repeats: int) -> list[Measurement]:
    """Registrations issued at once against sequential SyncRead subscriptions as baseline;
    and raw AsyncRead subscriptions issued at once, the floor for the scheduler, and raw
    Async ones, which skip reading the current values."""
    raw_runs, sched_runs, async_read_runs, async_runs = [], [], [], []
    with TangoSandbox() as sandbox:
        devices = start_attrs_servers(sandbox, servers)
        proxies = [sandbox.proxy(device) for device in devices]
        trls = [sandbox.trl(device) for device in devices]
        for _ in range(repeats):
            raw_runs.append(subscribe_all_once(proxies))
            sched_runs.append(register_all_once(trls))
            async_read_runs.append(async_all_once(proxies, tango.EventSubMode.AsyncRead))
            async_runs.append(async_all_once(proxies, tango.EventSubMode.Async))
        del proxies  # before the servers stop
    raw, sched, floor, unread = map(
        median_of_runs, (raw_runs, sched_runs, async_read_runs, async_runs)
    )
    name = "scheduler_subscribe_200"
    count = servers * len(VALUE_ATTRIBUTES)
    return [
        Measurement(
            name, f"total, {count} registrations at once", sched["total"], "s", raw["total"]
        ),
        Measurement(name, f"issuing the {count} calls", sched["issued"], "ms"),
        Measurement(
            name, f"total, {count} raw AsyncRead at once", floor["total"], "s", raw["total"]
        ),
        Measurement(
            name, f"total, {count} raw Async (no read) at once", unread["total"], "s", raw["total"]
        ),
    ]


@REGISTRY.add(
    "scheduler_subscribe_200",
    f"{SUBSCRIBE_SERVERS * len(VALUE_ATTRIBUTES)} registrations on {SUBSCRIBE_SERVERS} servers "
    "issued at once vs sequential SyncRead subscriptions",
)
def scheduler_subscribe_200(options: Options) -> list[Measurement]:
    return subscribe_many(SUBSCRIBE_SERVERS, options.repeats)


# -- scheduler_flood ---------------------------------------------------------------------


class StuckCallback:
    """Ignores events until `arm`ed; then counts them and blocks in every call until
    `release`.  `latest` is the value of the last data event counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False
        self._released = threading.Event()
        self.first_value = 0
        self.calls = 0
        self.delivered = 0
        self.missed_reports = 0
        self.latest: int | None = None

    def arm(self, first_value: int) -> None:
        """Count and block from now on; count only data events above ``first_value``."""
        self.first_value = first_value
        self._armed = True

    def release(self) -> None:
        self._released.set()

    def __call__(self, event: tango.EventData) -> None:
        if not self._armed:
            return  # the current value, sent on subscription
        with self._lock:
            self.calls += 1
            if not event.err:
                value = int(reading(event).value)
                self.delivered += value > self.first_value
                self.latest = value
            elif event.errors[0].reason == MISSED_EVENTS:
                self.missed_reports += 1
        self._released.wait()


def client_counts(device: str, attribute: str) -> tuple[int, int]:
    """cppTango's own counts for change events of ``device``'s ``attribute`` in this
    process: events passed to the callbacks, and reports of missed events."""
    entries = tango_callbacks(device, attribute)
    return (
        sum(entry.event_count for entry in entries),
        sum(entry.missed_event_count for entry in entries),
    )


def flood_once(
    proxy: Any, stuck: StuckCallback, seconds: float, *, on_tango_thread: bool
) -> dict[str, float]:
    """Flood ``fast`` at FLOOD_HZ for ``seconds`` into ``stuck``, subscribed already, while
    sampling this process's RSS; then release it and wait until it has handled the last
    event that reaches it.

    Through the scheduler, Tango's thread is never stuck, but on a slow machine it can end
    the flood thousands of events behind: ``stuck`` is released only once cppTango has
    taken in every event that will arrive (`catch_up`), so that it gets what its queue
    kept and nothing more.  Raw PyTango (``on_tango_thread``) cannot take in anything
    while ``stuck`` blocks its thread: it catches up once released.

    "pushed" counts the flood and the few events `catch_up` may add.  "missed" counts the
    pushed events that cppTango never passed to a callback (dropped at the ZMQ high-water
    mark); cppTango reports them, one error event per gap it sees ("reports").
    """
    device = proxy.dev_name().lower()
    process = psutil.Process()
    first = int(proxy.read_attribute("fast").value)
    received_before, reports_before = client_counts(device, "fast")
    stuck.arm(first)
    try:
        rss_start = rss_peak = process.memory_info().rss
        started = time.monotonic()
        proxy.command_inout("Start", [0.0, FLOOD_HZ])
        try:
            while (left := started + seconds - time.monotonic()) > 0:
                time.sleep(min(RSS_SAMPLE_SECONDS, left))
                rss_peak = max(rss_peak, process.memory_info().rss)
        finally:
            stop_ticker(proxy)
            pushing = time.monotonic() - started
            rss_peak = max(rss_peak, process.memory_info().rss)
        flooded = int(proxy.read_attribute("fast").value) - first
        if not on_tango_thread:
            catch_up(proxy, "fast")
    finally:
        stuck.release()  # whatever happened: a stuck worker would hang the shutdown
    if on_tango_thread:
        catch_up(proxy, "fast")
    last = int(proxy.read_attribute("fast").value)
    wait_until(
        lambda: stuck.latest == last,
        CATCH_UP_TIMEOUT_SECONDS,
        "the stuck callback handling the last event",
    )
    received, reports = client_counts(device, "fast")
    pushed = last - first
    return {
        "rate": flooded / pushing,
        "rss": (rss_peak - rss_start) / 1e6,
        "pushed": pushed,
        "delivered": stuck.delivered,
        "missed": pushed - (received - received_before),
        "reports": reports - reports_before,
        "reports delivered": stuck.missed_reports,
    }


def account(run: dict[str, float], dropped: int) -> dict[str, float]:
    """``run`` with the queue's drops and the accounting difference: what cppTango handed
    over (pushed events and missed reports) minus what went somewhere."""
    handed = run["pushed"] - run["missed"] + run["reports"]
    accounted = run["delivered"] + run["reports delivered"] + dropped
    return {**run, "dropped": dropped, "difference": handed - accounted}


def _flood_raw(proxy: Any, seconds: float) -> dict[str, float]:
    stuck = StuckCallback()
    with subscribed(proxy, "fast", stuck):
        run = flood_once(proxy, stuck, seconds, on_tango_thread=True)
    return account(run, 0)


def _flood_through(proxy: Any, seconds: float) -> dict[str, float]:
    """One flood of ``proxy``'s ``fast`` into a stuck callback behind a scheduler's default
    queue: `flood_once`'s counts, plus "dropped" by the queue and the accounting "difference"."""
    stuck = StuckCallback()
    with (
        CallbackScheduler(name="bench-flood") as sched,
        registered(sched, proxy, "fast", stuck) as callback_id,
    ):
        run = flood_once(proxy, stuck, seconds, on_tango_thread=False)
        dropped = queue_stats(sched, callback_id).dropped
    return account(run, dropped)


def flood(seconds: float) -> list[Measurement]:
    """RSS growth and exact drop accounting while a stuck callback's stream is flooded,
    through the scheduler (default queue) and raw PyTango as baseline.  One flood each."""
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchTicker/flood", "BenchTicker")
        sched = _flood_through(proxy, seconds)
        raw = _flood_raw(proxy, seconds)
        del proxy  # before the server stops
    name = "scheduler_flood"
    events = (
        ("pushed", "pushed"),
        ("delivered", "delivered to the callback"),
        ("dropped", "dropped by the queue"),
        ("missed", "missed in Tango"),
        ("reports", "missed-event reports from Tango"),
        ("difference", "accounting difference"),
    )
    return [
        Measurement(name, f"push rate ({seconds:g} s)", sched["rate"], "events/s", raw["rate"]),
        Measurement(name, "client RSS growth", sched["rss"], "MB", raw["rss"]),
        *(Measurement(name, label, sched[key], "events", raw[key]) for key, label in events),
    ]


@REGISTRY.add(
    "scheduler_flood",
    f"memory and drop accounting while a stuck callback's stream gets {FLOOD_HZ:,.0f} events/s",
)
def scheduler_flood(options: Options) -> list[Measurement]:
    return flood(QUICK_FLOOD_SECONDS if options.quick else FULL_FLOOD_SECONDS)


# -- scheduler_busy_queues ---------------------------------------------------------------


class _Entry(NamedTuple):
    enqueued_at: float


def dispatch_cost(queue_count: int, events: int) -> float:
    """Microseconds of the dispatcher's own work per event (queue it, take it, report it)
    on one thread, with ``events`` spread over ``queue_count`` queues that all wait."""
    dispatcher: Dispatcher[_Entry] = Dispatcher()
    queues: list[EventQueue[_Entry]] = [EventQueue(size=events) for _ in range(queue_count)]
    per_queue = events // queue_count
    start = time.perf_counter()
    for _ in range(per_queue):
        for queue in queues:
            dispatcher.put(queue, _Entry(time.monotonic()))
    finished: Run[_Entry] | None = None
    for _ in range(per_queue * queue_count):
        job = dispatcher.next(finished)
        assert job is not None
        finished = (job[0], 0.0, 1e-5)
    elapsed = time.perf_counter() - start
    dispatcher.close()
    return 1e6 * elapsed / (per_queue * queue_count)


@REGISTRY.add(
    "scheduler_busy_queues",
    f"the dispatcher's own work per event with {BUSY_QUEUES} queues waiting vs one (no Tango)",
)
def scheduler_busy_queues(options: Options) -> list[Measurement]:
    events = QUICK_DISPATCH_EVENTS if options.quick else FULL_DISPATCH_EVENTS
    runs = [
        {"one": dispatch_cost(1, events), "busy": dispatch_cost(BUSY_QUEUES, events)}
        for _ in range(options.repeats)
    ]
    result = median_of_runs(runs)
    name = "scheduler_busy_queues"
    return [
        Measurement(name, "per event, one queue waiting", result["one"], "µs"),
        Measurement(
            name, f"per event, {BUSY_QUEUES} queues waiting", result["busy"], "µs", result["one"]
        ),
    ]
