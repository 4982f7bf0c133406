"""``testing_assert_event``: how soon ``tango_events.assert_event`` returns once its event
is there, against the least a waiting test can do.

Each round pushes one change event (``Mark``) and waits for it, and times from cppTango's
reception of the event (``reception_date``) to the moment the waiting thread goes on:

- the floor: a raw callback on Tango's thread that notes the value and sets a
  `threading.Event` the test thread waits on, the least any recorder can do;
- the floor off Tango's thread: the raw callback only puts the event into a
  `queue.SimpleQueue`, and a thread of its own takes it and wakes the test thread, as a
  recorder that runs nothing on Tango's thread must (two handoffs instead of one);
- milonga: `TangoEvents.assert_event` with the value and ``after`` the event before, as
  a test that follows a sequence writes it; the event is recorded by the recorder's
  worker and matched in the test's thread.
"""

from __future__ import annotations

import threading
import time
from queue import SimpleQueue
from typing import Any

import tango

from benchmarks.harness import REGISTRY, Measurement, Options, median_of_runs
from benchmarks.raw_pytango import reading, start_bench_device, subscribed
from benchmarks.scheduler import micros
from milonga.sandbox import TangoSandbox
from milonga.testing import TangoEvents

QUICK_ROUNDS = 200
FULL_ROUNDS = 1000
WAIT_SECONDS = 60.0
"""A safety net: how long a round waits for its event before the benchmark fails."""


class Waiter:
    """The floor: a raw callback that hands each value to the waiting thread."""

    def __init__(self) -> None:
        self.value: Any = None
        self.received = 0.0
        self._arrived = threading.Event()

    def __call__(self, event: tango.EventData) -> None:
        if not event.err:
            self.value, self.received = reading(event).value, event.reception_date.totime()
            self._arrived.set()

    def wait_for(self, value: int) -> float:
        """Wait for the event of ``value``; the seconds from its reception to now."""
        while True:
            if not self._arrived.wait(WAIT_SECONDS):
                raise TimeoutError(f"the event of value {value} did not come")
            self._arrived.clear()
            if self.value == value:
                return time.time() - self.received


class Forwarder:
    """The floor off Tango's thread: Tango's thread puts, a thread of its own calls the
    `Waiter`."""

    def __init__(self, waiter: Waiter) -> None:
        self._events: SimpleQueue[tango.EventData | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._forward, args=(waiter,), daemon=True)
        self._thread.start()

    def __call__(self, event: tango.EventData) -> None:
        self._events.put(event)

    def _forward(self, waiter: Waiter) -> None:
        while (event := self._events.get()) is not None:
            waiter(event)

    def close(self) -> None:
        self._events.put(None)
        self._thread.join()


def _floor(proxy: Any, rounds: int, *, off_tangos_thread: bool) -> dict[str, float]:
    waiter = Waiter()
    callback: Waiter | Forwarder = Forwarder(waiter) if off_tangos_thread else waiter
    delays = []
    try:
        with subscribed(proxy, "counter", callback):
            for _ in range(rounds):
                expected = proxy.counter + 1
                proxy.Mark("counter")
                delays.append(waiter.wait_for(expected))
    finally:
        if isinstance(callback, Forwarder):
            callback.close()
    return micros(delays)


def _assert_event(proxy: Any, rounds: int) -> dict[str, float]:
    delays = []
    with TangoEvents(WAIT_SECONDS) as events:
        events.subscribe(proxy, "counter")
        (event,) = events.events(proxy, "counter")
        for _ in range(rounds):
            expected = proxy.counter + 1
            proxy.Mark("counter")
            event = events.assert_event(proxy, "counter", value=expected, after=event)
            delays.append(time.time() - event.received)
    return micros(delays)


def assert_event_wake(rounds: int, repeats: int) -> list[Measurement]:
    """The two floors and `assert_event`, in turn, ``repeats`` times ``rounds`` events."""
    floor_runs, off_runs, milonga_runs = [], [], []
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchPublisher/testing", "BenchPublisher")
        for _ in range(repeats):
            floor_runs.append(_floor(proxy, rounds, off_tangos_thread=False))
            off_runs.append(_floor(proxy, rounds, off_tangos_thread=True))
            milonga_runs.append(_assert_event(proxy, rounds))
        del proxy  # before the server stops
    floor, off = median_of_runs(floor_runs), median_of_runs(off_runs)
    milonga = median_of_runs(milonga_runs)
    name = "testing_assert_event"
    return [
        Measurement(
            name,
            f"reception to return {quantile} vs {against}",
            milonga[quantile],
            "µs",
            baseline[quantile],
        )
        for quantile in ("p50", "p99")
        for against, baseline in (
            ("a raw callback waking the test", floor),
            ("the same off Tango's thread", off),
        )
    ]


@REGISTRY.add(
    "testing_assert_event",
    "time from an event's reception to tango_events.assert_event returning, vs the floor",
)
def testing_assert_event(options: Options) -> list[Measurement]:
    return assert_event_wake(QUICK_ROUNDS if options.quick else FULL_ROUNDS, options.repeats)
