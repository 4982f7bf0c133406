"""Tango device classes the benchmarks run in their sandboxes.

Every attribute pushes change events from the device itself (no polling), with change
detection off, so each push reaches subscribers as one event.
"""

from __future__ import annotations

import queue
import threading
import time

import tango
from tango.server import Device, attribute, command

ATTRIBUTES_PER_DEVICE = 20
VALUE_ATTRIBUTES = [f"value{index:02d}" for index in range(ATTRIBUTES_PER_DEVICE)]


def _check_attribute(name: str, names: list[str]) -> None:
    """ValueError unless ``name`` is one of ``names``."""
    if name not in names:
        raise ValueError(f"no attribute {name!r} to push on; give one of {', '.join(names)}")


class BenchPublisher(Device):
    """``Burst(n)`` pushes change events 1, 2, ..., n on ``counter`` as fast as it can;
    ``Mark("counter")`` pushes one more, the last value plus one."""

    def init_device(self) -> None:
        super().init_device()
        self._counter = 0
        self.set_change_event("counter", True, False)

    @attribute(dtype=int)
    def counter(self) -> int:
        return self._counter

    @command(dtype_in=int)
    def Burst(self, count: int) -> None:
        for value in range(1, count + 1):
            self.push_change_event("counter", value)
        self._counter = count

    @command(dtype_in=str)
    def Mark(self, name: str) -> None:
        """Push one more change event on ``name``, which must be ``counter``."""
        _check_attribute(name, ["counter"])
        self._counter += 1
        self.push_change_event("counter", self._counter)


class BenchTicker(Device):
    """``Start([slow_hz, fast_hz])`` pushes 1, 2, 3, ... on ``slow`` and ``fast`` at steady
    rates, each from its own thread, until ``Stop()``; a rate of 0 leaves that attribute
    alone.  Reading an attribute gives how many events it pushed so far.

    ``Stop()`` only tells the pumps to stop: a pump may be waiting in
    ``push_change_event`` for the device lock that the command holds, so joining it there
    would deadlock (at 10 kHz it nearly always is).  ``pumping`` is False once they stopped.
    Then ``Mark(name)`` pushes one more event on ``slow`` or ``fast``.
    """

    def init_device(self) -> None:
        super().init_device()
        self._stop = threading.Event()
        self._pumps: list[threading.Thread] = []
        self._values = {"slow": 0, "fast": 0}
        for name in self._values:
            self.set_change_event(name, True, False)

    def delete_device(self) -> None:
        self.Stop()
        super().delete_device()

    @attribute(dtype=int)
    def slow(self) -> int:
        return self._values["slow"]

    @attribute(dtype=int)
    def fast(self) -> int:
        return self._values["fast"]

    @attribute(dtype=bool)
    def pumping(self) -> bool:
        return self._pumping()

    def _pumping(self) -> bool:
        return any(pump.is_alive() for pump in self._pumps)

    @command(dtype_in=(float,))
    def Start(self, rates: list[float]) -> None:
        self.Stop()
        self._stop = threading.Event()
        self._pumps = [
            threading.Thread(target=self._pump, args=(name, 1.0 / rate, self._stop), daemon=True)
            for name, rate in zip(("slow", "fast"), rates, strict=True)
            if rate > 0
        ]
        for pump in self._pumps:
            pump.start()

    @command
    def Stop(self) -> None:
        self._stop.set()

    @command(dtype_in=str)
    def Mark(self, name: str) -> None:
        """Push one more change event on ``name``, once the pumps have stopped."""
        _check_attribute(name, list(self._values))
        if self._pumping():
            raise RuntimeError("Mark pushes only once the pumps have stopped: call Stop first")
        self._values[name] += 1
        self.push_change_event(name, self._values[name])

    def _pump(self, name: str, period: float, stop: threading.Event) -> None:
        due = time.monotonic()
        while not stop.wait(max(0.0, due - time.monotonic())):
            self._values[name] += 1
            self.push_change_event(name, self._values[name])
            due += period


class BenchAttrs(Device):
    """Twenty float attributes ``value00`` ... ``value19`` with change events enabled."""

    def initialize_dynamic_attributes(self) -> None:
        for name in VALUE_ATTRIBUTES:
            self.add_attribute(attribute(name=name, dtype=float, fget=self.read_value))
            self.set_change_event(name, True, False)

    def read_value(self, attr: tango.Attribute) -> float:
        return 0.0


BUSY_HOLD_TIMEOUT_SECONDS = 3.0
BusyRequest = tuple[float, threading.Event]


class BenchBusyAdmin(Device):
    """``Busy(seconds)`` makes this device server's admin device busy for ``seconds``.

    A thread of the device holds the admin device's monitor that long, so admin commands
    such as ``QueryEventSystem`` wait for it, as on a server whose admin is slow to answer.
    ``Busy`` returns once that thread holds the monitor, so an admin command sent after
    ``Busy`` returns is answered ``seconds`` after ``Busy`` started holding, never sooner.
    Calls that overlap are served one after another.
    """

    def init_device(self) -> None:
        super().init_device()
        self._requests: queue.SimpleQueue[BusyRequest | None] = queue.SimpleQueue()
        threading.Thread(
            target=self._hold_admin, args=(self._requests,), name="bench-busy-admin", daemon=True
        ).start()

    def delete_device(self) -> None:
        self._requests.put(None)
        super().delete_device()

    @command(dtype_in=float)
    def Busy(self, seconds: float) -> None:
        held = threading.Event()
        self._requests.put((seconds, held))
        if not held.wait(BUSY_HOLD_TIMEOUT_SECONDS):
            raise RuntimeError(
                f"the admin device's monitor stayed taken for {BUSY_HOLD_TIMEOUT_SECONDS:g} s; "
                "is another admin command stuck?"
            )

    @staticmethod
    def _hold_admin(requests: queue.SimpleQueue[BusyRequest | None]) -> None:
        """Hold the admin device's monitor for each request, until a None request."""
        while (request := requests.get()) is not None:
            seconds, held = request
            with tango.AutoTangoMonitor(tango.Util.instance().get_dserver_device()):
                held.set()
                time.sleep(seconds)
