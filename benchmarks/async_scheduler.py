"""`AsyncCallbackScheduler` against raw PyTango's asyncio green mode, the threaded
scheduler, and the floor of any asyncio design: a bare ``loop.call_soon_threadsafe``
handoff.

Each measurement runs the client's event loop on a thread of its own (`LoopThread`), so
that the benchmark drives the devices and waits for conditions from the main thread with
the very functions of `benchmarks.raw_pytango` and `benchmarks.scheduler`, unchanged.

How raw PyTango (10.3.1) delivers an event to an asyncio green-mode proxy's callback: on
cppTango's event thread, ``green_callback`` (``tango/green.py``) calls
``AsyncioExecutor.submit`` (``tango/asyncio_executor.py``), which hands the coroutine
``callback(event)`` to the proxy's loop with ``run_coroutine_threadsafe``: one
``call_soon_threadsafe`` (one wake-up of the loop) and one task per event, with no bound,
no order between a stream's callbacks once they await, and exceptions that nobody reads.
A plain function is wrapped into such a coroutine too, with a DeprecationWarning.

The green-mode proxies here get an executor of their own (``asyncio_executor=``), bound
to the loop of their `LoopThread`: PyTango's global executor keeps the first loop it saw.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, TypeVar

import tango
from tango.asyncio_executor import AsyncioExecutor

from benchmarks.harness import (
    REGISTRY,
    Measurement,
    Options,
    median_of_runs,
    percentile,
    wait_until,
)
from benchmarks.raw_pytango import (
    FULL_BURST,
    FULL_WINDOW_SECONDS,
    QUICK_BURST,
    QUICK_WINDOW_SECONDS,
    SLOW_CALLBACK_SECONDS,
    BurstCounter,
    EventCallback,
    SlowCallback,
    Subscribe,
    burst_once,
    latencies_once,
    start_bench_device,
    subscribed,
)
from benchmarks.scheduler import (
    FULL_HANDOFF_SECONDS,
    HANDOFF_HZ,
    MEASURED_HZ,
    QUICK_HANDOFF_SECONDS,
    SUBSCRIBE_TIMEOUT_SECONDS,
    HandoffTimer,
    burst_raw,
    burst_through,
    held,
    micros,
    queue_stats,
    sized_queue,
    tick,
)
from milonga import AsyncCallbackScheduler
from milonga.sandbox import TangoSandbox
from milonga.scheduler import CallbackID

CHANGE = tango.EventType.CHANGE_EVENT
LOOP_TIMEOUT_SECONDS = 60.0
"""A safety net: how long the main thread waits for anything it asked of the loop."""

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running on a thread of its own until `close`.

    `run` runs a coroutine on it from another thread and returns its result;
    `green_proxy` makes an asyncio green-mode proxy whose calls and callbacks use it.
    """

    def __init__(self, name: str = "bench-asyncio-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name)
        self._thread.start()
        # Built on the loop's thread: an executor delegates only calls made there.
        self._executor: AsyncioExecutor = self.run(_new_executor())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(LOOP_TIMEOUT_SECONDS)

    def green_proxy(self, trl: str) -> Any:
        """A ``GreenMode.Asyncio`` proxy to ``trl`` that delivers events on this loop."""
        return tango.DeviceProxy(
            trl, green_mode=tango.GreenMode.Asyncio, asyncio_executor=self._executor
        )

    def close(self) -> None:
        """Let the tasks still on the loop end (such as coroutine callbacks still
        sleeping), then stop the loop, join its thread and close it."""
        try:
            self.run(_finish_tasks())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()


async def _new_executor() -> AsyncioExecutor:
    return AsyncioExecutor(loop=asyncio.get_running_loop())


async def _finish_tasks() -> None:
    """Return once every other task of the running loop has ended."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await asyncio.gather(*others, return_exceptions=True)


@contextmanager
def running_loop() -> Iterator[LoopThread]:
    """A `LoopThread` for the ``with`` block, closed on exit."""
    loop_thread = LoopThread()
    try:
        yield loop_thread
    finally:
        loop_thread.close()


# -- raw PyTango asyncio green mode: the subscribe step ---------------------------------


class CoroutineTwin:
    """The coroutine callback that stands for ``callback`` on an asyncio green proxy.

    `benchmarks.raw_pytango`'s `SlowCallback` gets an asyncio twin, which awaits
    ``asyncio.sleep(SLOW_CALLBACK_SECONDS)`` while ``sleeping`` is set; any other callback
    is called as it is when the coroutine starts.  ``calls`` counts the coroutines started.
    With ``timed``, ``handoffs`` keeps, per data event, the seconds from cppTango's
    reception of it to the coroutine's start.
    """

    def __init__(self, callback: EventCallback, *, timed: bool = False) -> None:
        self.callback = callback
        self.timed = timed
        self.calls = 0
        self.handoffs: list[float] = []

    async def __call__(self, event: tango.EventData) -> None:
        if self.timed and not event.err:
            self.handoffs.append(time.time() - event.reception_date.totime())
        self.calls += 1
        if not isinstance(self.callback, SlowCallback):
            self.callback(event)
        elif self.callback.sleeping.is_set():
            await asyncio.sleep(SLOW_CALLBACK_SECONDS)


async def _subscribe(green_proxy: Any, attribute: str, twin: CoroutineTwin) -> int:
    event_id: int = await green_proxy.subscribe_event(
        attribute, CHANGE, twin, sub_mode=tango.EventSubMode.SyncRead
    )
    return event_id


async def _unsubscribe(green_proxy: Any, event_id: int) -> None:
    await green_proxy.unsubscribe_event(event_id)


@contextmanager
def green_subscribed(
    loop_thread: LoopThread, green_proxy: Any, attribute: str, twin: CoroutineTwin
) -> Iterator[int]:
    """Subscribe the coroutine ``twin`` to change events of ``attribute`` with ``await
    green_proxy.subscribe_event(...)`` (SyncRead) on the loop; the block starts once the
    coroutine has started for the current value.  Unsubscribe on exit."""
    event_id = loop_thread.run(_subscribe(green_proxy, attribute, twin))
    try:
        wait_until(
            lambda: twin.calls > 0,
            SUBSCRIBE_TIMEOUT_SECONDS,
            f"the first coroutine callback on {attribute}",
        )
        yield event_id
    finally:
        loop_thread.run(_unsubscribe(green_proxy, event_id))


def green(loop_thread: LoopThread, green_proxy: Any, twins: dict[str, CoroutineTwin]) -> Subscribe:
    """The subscribe step of `benchmarks.raw_pytango`'s measuring functions on raw PyTango's
    asyncio green mode: each callback becomes a timed `CoroutineTwin`, kept in ``twins``
    by attribute, subscribed through ``green_proxy`` (which stands for the proxy the
    measuring function passes: both name the same device)."""

    def subscribe(
        proxy: Any, attribute: str, callback: EventCallback
    ) -> AbstractContextManager[int]:
        twins[attribute] = CoroutineTwin(callback, timed=True)
        return green_subscribed(loop_thread, green_proxy, attribute, twins[attribute])

    return subscribe


# -- AsyncCallbackScheduler: the subscribe step --------------------------------------------


async def _new_scheduler(task_count: int) -> AsyncCallbackScheduler:
    return AsyncCallbackScheduler(task_count=task_count, name="bench-async")


@contextmanager
def async_scheduler(loop_thread: LoopThread, task_count: int) -> Iterator[AsyncCallbackScheduler]:
    """An `AsyncCallbackScheduler` with ``task_count`` tasks on the loop, closed on exit."""
    sched = loop_thread.run(_new_scheduler(task_count))
    try:
        yield sched
    finally:
        loop_thread.run(sched.aclose())


def scheduled(
    loop_thread: LoopThread,
    sched: AsyncCallbackScheduler,
    twins: dict[str, CoroutineTwin],
    queue_size: int | None = None,
) -> Subscribe:
    """The subscribe step of `benchmarks.raw_pytango`'s measuring functions through
    ``sched``: each callback becomes a timed `CoroutineTwin`, kept in ``twins`` by
    attribute, registered in a queue of ``queue_size`` events (default if None) and held
    as `benchmarks.scheduler.held` holds a threaded registration."""

    def subscribe(
        proxy: Any, attribute: str, callback: EventCallback
    ) -> AbstractContextManager[CallbackID]:
        twins[attribute] = CoroutineTwin(callback, timed=True)
        registration = sched.register_event_callback(
            proxy,
            attribute,
            CHANGE,
            twins[attribute],
            queue_factory=sized_queue(sched, queue_size),
        )
        return held(sched, loop_thread.run(registration))

    return subscribe


# -- one sandbox, loop and scheduler for the variants of a benchmark ------------------------


class Rig(NamedTuple):
    """What a variant runs against: the device (a plain proxy and an asyncio green-mode
    one), the client's loop, and an `AsyncCallbackScheduler` on it."""

    proxy: Any
    loop_thread: LoopThread
    green_proxy: Any
    sched: AsyncCallbackScheduler


Variant = Callable[[Rig], dict[str, float]]


def alternate(
    server: str, device_class: str, task_count: int, repeats: int, variants: dict[str, Variant]
) -> dict[str, dict[str, float]]:
    """Medians over ``repeats`` of each of ``variants``, run one after the other in every
    repeat against one ``device_class`` device of ``server`` in a sandbox of its own, with
    a scheduler of ``task_count`` tasks."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with (
        TangoSandbox() as sandbox,
        running_loop() as loop_thread,
        async_scheduler(loop_thread, task_count) as sched,
    ):
        proxy = start_bench_device(sandbox, server, device_class)
        rig = Rig(proxy, loop_thread, loop_thread.green_proxy(sandbox.trl(proxy.dev_name())), sched)
        del proxy
        for _ in range(repeats):
            for name, once in variants.items():
                runs[name].append(once(rig))
        del rig  # the proxies, before the server stops
    return {name: median_of_runs(variant_runs) for name, variant_runs in runs.items()}


# -- fairness: the tutorial's load with a coroutine callback -----------------------------


def coroutine_fairness_once(
    proxy: Any, window: float, subscribe: Callable[[dict[str, CoroutineTwin]], Subscribe]
) -> dict[str, float]:
    """One window of the tutorial's load with a coroutine that awaits
    ``asyncio.sleep(SLOW_CALLBACK_SECONDS)`` fed ``slow`` at SLOW_HZ, while ``fast`` is
    measured at MEASURED_HZ, subscribed by ``subscribe(twins)`` (`green` or `scheduled`).
    The latency figures (ms) are those of `latencies_once` (push to callback start);
    "handoff p50"/"handoff p99" (ms) are the fast stream's times from cppTango's
    reception to the coroutine's start, over the whole run."""
    twins: dict[str, CoroutineTwin] = {}
    run = latencies_once(proxy, window, fast_hz=MEASURED_HZ, subscribe=subscribe(twins))
    handoffs = twins["fast"].handoffs
    run["handoff p50"] = 1000 * percentile(handoffs, 0.5)
    run["handoff p99"] = 1000 * percentile(handoffs, 0.99)
    return run


def fairness(window: float, repeats: int) -> dict[str, dict[str, float]]:
    """Medians over ``repeats`` of the tutorial's load on raw asyncio green mode ("green")
    and through an `AsyncCallbackScheduler` with two tasks, one for the slow coroutine and
    one for the measured stream ("milonga"), alternating."""
    variants: dict[str, Variant] = {
        "green": lambda rig: coroutine_fairness_once(
            rig.proxy, window, functools.partial(green, rig.loop_thread, rig.green_proxy)
        ),
        "milonga": lambda rig: coroutine_fairness_once(
            rig.proxy, window, functools.partial(scheduled, rig.loop_thread, rig.sched)
        ),
    }
    return alternate("BenchTicker/asyncio-fairness", "BenchTicker", 2, repeats, variants)


# -- the floor: a bare call_soon_threadsafe handoff -------------------------------------


class CallSoon:
    """A plain Tango callback that hands each event to ``callback`` on ``loop`` with
    ``loop.call_soon_threadsafe``, and nothing else: the floor of any asyncio design.

    ``handoffs`` keeps, per event, the seconds from this callback on Tango's thread to the
    start of the handed-over call on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: EventCallback) -> None:
        self.handoffs: list[float] = []
        self._loop = loop
        self._callback = callback

    def __call__(self, event: tango.EventData) -> None:
        self._loop.call_soon_threadsafe(self._start, event, time.perf_counter())

    def _start(self, event: tango.EventData, handed: float) -> None:
        self.handoffs.append(time.perf_counter() - handed)
        self._callback(event)


# -- delivered rate of a burst into a no-op callback --------------------------------------


def burst_call_soon(proxy: Any, loop_thread: LoopThread, burst: int) -> dict[str, float]:
    """One burst into a no-op callback that `CallSoon` runs on the loop."""
    counter = BurstCounter()
    with subscribed(proxy, "counter", CallSoon(loop_thread.loop, counter)):
        return burst_once(proxy, counter, burst)


def burst_green(
    proxy: Any, loop_thread: LoopThread, green_proxy: Any, burst: int
) -> dict[str, float]:
    """One burst into a no-op coroutine callback subscribed on raw asyncio green mode."""
    counter = BurstCounter()
    with green_subscribed(loop_thread, green_proxy, "counter", CoroutineTwin(counter)):
        return burst_once(proxy, counter, burst)


def burst_scheduled(
    proxy: Any, loop_thread: LoopThread, sched: AsyncCallbackScheduler, burst: int
) -> dict[str, float]:
    """One burst into a no-op coroutine callback through ``sched``, in a queue holding the
    whole burst; "lost" counts the events lost in Tango."""
    counter = BurstCounter()
    with scheduled(loop_thread, sched, {}, queue_size=burst)(proxy, "counter", counter):
        return burst_once(proxy, counter, burst)


def asyncio_noop_rates(burst: int, repeats: int) -> dict[str, dict[str, float]]:
    """Medians over ``repeats`` of the delivered rate ("rate", events/s) and losses
    ("lost") of a burst of ``burst`` events: "raw" on Tango's thread, "call_soon" (the
    floor), "green" (raw asyncio green mode), "milonga" (an `AsyncCallbackScheduler`) and
    "threads" (a `CallbackScheduler`), alternating within each repeat; both schedulers
    with a queue holding the whole burst."""
    variants: dict[str, Variant] = {
        "raw": lambda rig: burst_raw(rig.proxy, burst),
        "call_soon": lambda rig: burst_call_soon(rig.proxy, rig.loop_thread, burst),
        "green": lambda rig: burst_green(rig.proxy, rig.loop_thread, rig.green_proxy, burst),
        "milonga": lambda rig: burst_scheduled(rig.proxy, rig.loop_thread, rig.sched, burst),
        "threads": lambda rig: burst_through(rig.proxy, burst, burst),
    }
    return alternate("BenchPublisher/asyncio-noop", "BenchPublisher", 1, repeats, variants)


# -- handoff latency ------------------------------------------------------------------------


def handoff_call_soon(proxy: Any, loop_thread: LoopThread, seconds: float) -> dict[str, float]:
    """`tick` for ``seconds`` into a `HandoffTimer` that `CallSoon` runs on the loop: the
    times (µs) from cppTango's reception to the start on the loop ("p50", "p99"), and
    from Tango's callback to the start on the loop ("handoff p50", "handoff p99")."""
    timer = HandoffTimer()
    handoff = CallSoon(loop_thread.loop, timer)
    with subscribed(proxy, "fast", handoff):
        handoff.handoffs.clear()
        tick(proxy, timer, seconds)
    handed = micros(handoff.handoffs)
    return {**micros(timer.delays), "handoff p50": handed["p50"], "handoff p99": handed["p99"]}


def handoff_green(
    proxy: Any, loop_thread: LoopThread, green_proxy: Any, seconds: float
) -> dict[str, float]:
    """`tick` for ``seconds`` into a `HandoffTimer` called by a coroutine on raw asyncio
    green mode: the times (µs) from cppTango's reception to the coroutine's start."""
    timer = HandoffTimer()
    with green_subscribed(loop_thread, green_proxy, "fast", CoroutineTwin(timer)):
        tick(proxy, timer, seconds)
    return micros(timer.delays)


def handoff_scheduled(
    proxy: Any, loop_thread: LoopThread, sched: AsyncCallbackScheduler, seconds: float
) -> dict[str, float]:
    """`tick` for ``seconds`` into a `HandoffTimer` called by a coroutine through
    ``sched``: the times (µs) from cppTango's reception to the coroutine's start ("p50",
    "p99"), and from Tango's callback to it, as the queue's statistics report them
    ("handoff p50", "handoff p99")."""
    timer = HandoffTimer()
    registration = sched.register_event_callback(proxy, "fast", CHANGE, CoroutineTwin(timer))
    with held(sched, loop_thread.run(registration)) as callback_id:
        tick(proxy, timer, seconds)
        stats = queue_stats(sched, callback_id)
    assert stats.queueing_delay_p50 is not None
    assert stats.queueing_delay_p99 is not None
    return {
        **micros(timer.delays),
        "handoff p50": 1e6 * stats.queueing_delay_p50,
        "handoff p99": 1e6 * stats.queueing_delay_p99,
    }


def asyncio_handoffs(seconds: float, repeats: int) -> dict[str, dict[str, float]]:
    """Medians over ``repeats`` of `handoff_call_soon` ("call_soon", the floor),
    `handoff_green` ("green") and `handoff_scheduled` ("milonga"), ticking at
    `benchmarks.scheduler.HANDOFF_HZ`, alternating within each repeat."""
    variants: dict[str, Variant] = {
        "call_soon": lambda rig: handoff_call_soon(rig.proxy, rig.loop_thread, seconds),
        "green": lambda rig: handoff_green(rig.proxy, rig.loop_thread, rig.green_proxy, seconds),
        "milonga": lambda rig: handoff_scheduled(rig.proxy, rig.loop_thread, rig.sched, seconds),
    }
    return alternate("BenchTicker/asyncio-handoff", "BenchTicker", 1, repeats, variants)


# -- the rows, for `python -m benchmarks` ---------------------------------------------------


@REGISTRY.add(
    "async_fairness",
    "the tutorial's load with a 300 ms coroutine: AsyncCallbackScheduler vs raw green mode",
)
def async_fairness(options: Options) -> list[Measurement]:
    window = QUICK_WINDOW_SECONDS if options.quick else FULL_WINDOW_SECONDS
    result = fairness(window, options.repeats)
    green_run, milonga = result["green"], result["milonga"]
    name = "async_fairness"
    keys = {
        **{
            f"latency {statistic}": f"latency {statistic}" for statistic in ("median", "p99", "max")
        },
        "growth": "growth per slow event",
        "handoff p50": "reception to coroutine p50",
        "handoff p99": "reception to coroutine p99",
    }
    return [
        Measurement(name, label, milonga[key], "ms", green_run[key]) for key, label in keys.items()
    ]


@REGISTRY.add(
    "async_noop_rate",
    "events/s reaching a no-op coroutine: AsyncCallbackScheduler vs call_soon_threadsafe",
)
def async_noop_rate(options: Options) -> list[Measurement]:
    burst = QUICK_BURST if options.quick else FULL_BURST
    rates = asyncio_noop_rates(burst, options.repeats)
    floor, threads = rates["call_soon"]["rate"], rates["threads"]["rate"]
    name = "async_noop_rate"
    return [
        Measurement(
            name,
            "delivered rate vs call_soon_threadsafe floor",
            rates["milonga"]["rate"],
            "events/s",
            floor,
        ),
        Measurement(
            name,
            "delivered rate vs CallbackScheduler",
            rates["milonga"]["rate"],
            "events/s",
            threads,
        ),
        Measurement(
            name,
            "raw green mode vs call_soon_threadsafe floor",
            rates["green"]["rate"],
            "events/s",
            floor,
        ),
        Measurement(
            name,
            "call_soon_threadsafe floor vs raw plain callback",
            floor,
            "events/s",
            rates["raw"]["rate"],
        ),
        *(
            Measurement(
                name,
                f"lost in Tango of {burst:,}, {label}",
                rates[key]["lost"],
                "events",
                rates["raw"]["lost"],
            )
            for key, label in (
                ("milonga", "AsyncCallbackScheduler"),
                ("call_soon", "call_soon_threadsafe"),
                ("green", "raw green mode"),
            )
        ),
    ]


@REGISTRY.add(
    "async_handoff",
    f"time from Tango's callback to the coroutine's start at {HANDOFF_HZ:g} Hz",
)
def async_handoff(options: Options) -> list[Measurement]:
    seconds = QUICK_HANDOFF_SECONDS if options.quick else FULL_HANDOFF_SECONDS
    result = asyncio_handoffs(seconds, options.repeats)
    floor = result["call_soon"]
    name = "async_handoff"
    return [
        *(
            Measurement(
                name,
                f"Tango callback to coroutine {key[8:]} (stats)",
                result["milonga"][key],
                "µs",
                floor[key],
            )
            for key in ("handoff p50", "handoff p99")
        ),
        *(
            Measurement(
                name, f"reception to coroutine {key}", result["milonga"][key], "µs", floor[key]
            )
            for key in ("p50", "p99")
        ),
        *(
            Measurement(
                name,
                f"reception to coroutine {key}, raw green mode",
                result["green"][key],
                "µs",
                floor[key],
            )
            for key in ("p50", "p99")
        ),
    ]
