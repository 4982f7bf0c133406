"""``testing_assert_event``: how soon ``tango_events.assert_event`` returns once its event
is there, against the least a waiting test can do.

Each round pushes one change event (``Mark``) and waits for it, and times from cppTango's
reception of the event (``reception_date``) to the moment the waiting thread goes on:

- the floor: a raw callback on Tango's thread that notes the value and sets a
  `threading.Event` the test thread waits on, the least any recorder can do;
- milonga: `TangoEvents.assert_event` with the value and ``after`` the event before, as
  a test that follows a sequence writes it; the event is recorded by the recorder's
  worker and matched in the test's thread.
"""

from __future__ import annotations

import threading
import time
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


def _floor(proxy: Any, rounds: int) -> dict[str, float]:
    waiter = Waiter()
    delays = []
    with subscribed(proxy, "counter", waiter):
        for _ in range(rounds):
            expected = proxy.counter + 1
            proxy.Mark("counter")
            delays.append(waiter.wait_for(expected))
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
    """The floor and `assert_event`, alternating, ``repeats`` times ``rounds`` events."""
    floor_runs, milonga_runs = [], []
    with TangoSandbox() as sandbox:
        proxy = start_bench_device(sandbox, "BenchPublisher/testing", "BenchPublisher")
        for _ in range(repeats):
            floor_runs.append(_floor(proxy, rounds))
            milonga_runs.append(_assert_event(proxy, rounds))
        del proxy  # before the server stops
    floor, milonga = median_of_runs(floor_runs), median_of_runs(milonga_runs)
    name = "testing_assert_event"
    return [
        Measurement(
            name,
            f"reception to assert_event's return {quantile} vs a raw callback waking a thread",
            milonga[quantile],
            "µs",
            floor[quantile],
        )
        for quantile in ("p50", "p99")
    ]


@REGISTRY.add(
    "testing_assert_event",
    "time from an event's reception to tango_events.assert_event returning, vs the floor",
)
def testing_assert_event(options: Options) -> list[Measurement]:
    return assert_event_wake(QUICK_ROUNDS if options.quick else FULL_ROUNDS, options.repeats)
