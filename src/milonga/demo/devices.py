"""Device classes of the demo control system.

`HwDevice` simulates hardware whose scans report their end through `mode` events.
`TopDevice` and `RogueDevice` run together in one server, so they share its event-consumer
thread: the rogue's slow `position` handler makes the top device's `mode` events late.
With the `UseScheduler` property both take their callbacks off that thread.
"""

from __future__ import annotations

import enum
import functools
import threading
import time
from collections.abc import Callable
from concurrent import futures

import tango
from tango.server import Device, attribute, command, device_property

from milonga.scheduler import CallbackScheduler, allow_internal_threads
from milonga.tango_errors import root_cause

SCAN_COMPLETE = "Scan complete"
"""How `HwDevice`'s log line at the end of a scan begins."""
IDLE_TIMEOUT = "Timeout waiting for Mode.IDLE"
"""How the error of `TopDevice.Scan()` begins when no IDLE event came in time."""


class Mode(enum.IntEnum):
    """What `HwDevice` is doing."""

    IDLE = 0
    SCANNING = 1


class HwDevice(Device):
    """Simulated hardware: `Scan()` returns at once, then `position` moves until `mode` is IDLE.

    The scan pushes a `position` change event every 1/`PushHz` seconds for `ScanSeconds`
    seconds, then pushes `Mode.IDLE`.
    """

    ScanSeconds = device_property(dtype=float, default_value=13.0)
    PushHz = device_property(dtype=float, default_value=10.0)

    def init_device(self) -> None:
        super().init_device()
        self._mode = Mode.IDLE
        self._position = 0.0
        self._stop = threading.Event()
        self._scan: threading.Thread | None = None
        self.set_change_event("mode", True, False)
        self.set_change_event("position", True, False)
        self.set_state(tango.DevState.ON)

    def delete_device(self) -> None:
        self._stop.set()
        if self._scan is not None:
            self._scan.join()
        super().delete_device()

    @attribute(dtype=Mode)
    def mode(self) -> Mode:
        return self._mode

    @attribute(dtype=float, unit="mm")
    def position(self) -> float:
        return self._position

    @command
    def Scan(self) -> None:
        if self._mode is Mode.SCANNING:
            raise RuntimeError("a scan is already running; wait for mode to return to IDLE")
        self._set_mode(Mode.SCANNING)
        print("Starting scan -- pushing Mode.SCANNING", flush=True)
        self._scan = threading.Thread(target=self._run_scan, name="scan", daemon=True)
        self._scan.start()

    def _run_scan(self) -> None:
        started = time.monotonic()
        period = 1.0 / self.PushHz
        steps = round(self.ScanSeconds * self.PushHz)
        for step in range(1, steps + 1):
            if self._stop.wait(started + step * period - time.monotonic()):
                return
            self._position = round(self._position + 0.1, 6)
            self.push_change_event("position", self._position)
        self._set_mode(Mode.IDLE)
        elapsed = time.monotonic() - started
        print(f"{SCAN_COMPLETE} in {elapsed:.2f} s -- pushed Mode.IDLE", flush=True)

    def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        self.push_change_event("mode", mode)


class _Subscriptions:
    """A device's change-event subscriptions: on Tango's own event-consumer thread, or,
    with a `CallbackScheduler`, on the scheduler's workers."""

    def __init__(self, scheduler: CallbackScheduler | None) -> None:
        self.scheduler = scheduler

    def subscribe(
        self,
        device: str,
        attr_name: str,
        callback: Callable[[tango.EventData], None],
        timeout: float,
    ) -> Callable[[], None]:
        """Subscribe ``callback`` and return the function that unsubscribes it.

        Returns once the subscription is connected; raises TimeoutError (scheduler only)
        if it is not within ``timeout`` seconds.
        """
        if self.scheduler is None:
            proxy = tango.DeviceProxy(device)
            subscription = proxy.subscribe_event(attr_name, tango.EventType.CHANGE_EVENT, callback)
            return functools.partial(proxy.unsubscribe_event, subscription)
        registration = self.scheduler.register_event_callback(
            device, attr_name, tango.EventType.CHANGE_EVENT, callback
        )
        try:
            callback_id = registration.result(timeout)
        except futures.TimeoutError:
            if registration.cancel():
                raise TimeoutError(
                    f"could not subscribe to {device}/{attr_name} within {timeout:g} s"
                ) from None
            callback_id = registration.result()
        return functools.partial(self.scheduler.unregister_callback, callback_id)

    def shutdown(self, device: Device) -> None:
        """Stop the scheduler, if any, letting its workers push events on ``device``."""
        if self.scheduler is not None:
            with allow_internal_threads(device):
                self.scheduler.shutdown()


def _subscriptions(device: Device, use_scheduler: bool, slow_callbacks: int) -> _Subscriptions:
    """Subscriptions for ``device``; with a scheduler, sized as the scheduling how-to says:
    one worker per slow callback that may run at the same time, plus one for the rest."""
    if not use_scheduler:
        return _Subscriptions(None)
    return _Subscriptions(
        CallbackScheduler(thread_count=slow_callbacks + 1, name=device.get_name())
    )


class TopDevice(Device):
    """The device users call: its `Scan()` runs a scan on `Hw` and returns when it is over.

    `Scan()` subscribes to `Hw`'s `mode`, calls `Hw`'s `Scan()`, and waits up to
    `TimeoutSeconds` for `Mode.IDLE` after `Mode.SCANNING`.  With `UseScheduler` the
    `mode` callback runs on a `CallbackScheduler` worker instead of Tango's consumer thread.
    """

    Hw = device_property(dtype=str, default_value="foo/bar/hw")
    TimeoutSeconds = device_property(dtype=float, default_value=30.0)
    UseScheduler = device_property(dtype=bool, default_value=False)

    def init_device(self) -> None:
        super().init_device()
        self._subscriptions = _subscriptions(self, self.UseScheduler, slow_callbacks=0)
        self.set_state(tango.DevState.ON)

    def delete_device(self) -> None:
        self._subscriptions.shutdown(self)
        super().delete_device()

    @command(
        doc_in="Run a scan on the hardware device and return once it has finished. This can "
        "take as long as the TimeoutSeconds property (30 s unless configured): raise your "
        "client's timeout above that (DeviceProxy.set_timeout_millis) before calling it."
    )
    def Scan(self) -> None:
        deadline = time.monotonic() + self.TimeoutSeconds
        scanning = threading.Event()
        idle = threading.Event()

        def on_mode(event: tango.EventData) -> None:
            if event.err or event.attr_value is None:
                return
            if event.attr_value.value == Mode.SCANNING:
                scanning.set()
            elif scanning.is_set():
                idle.set()

        unsubscribe = self._subscriptions.subscribe(self.Hw, "mode", on_mode, self.TimeoutSeconds)
        try:
            tango.DeviceProxy(self.Hw).Scan()
            if not idle.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(
                    f"{IDLE_TIMEOUT}: no IDLE event from {self.Hw} within {self.TimeoutSeconds:g} s"
                )
        finally:
            unsubscribe()


class RogueDevice(Device):
    """Republishes `Hw`'s `position` and `mode`, with a position handler that is slow.

    It subscribes at start.  Each `position` event takes `HandlerSeconds` to handle before
    it is pushed again.  Without `UseScheduler` that time is spent on Tango's event-consumer
    thread, which every device of the server shares.  With it, the subscriptions must connect
    within `SubscribeSeconds`.  If a subscription fails, the device is in FAULT and its
    status says why.
    """

    Hw = device_property(dtype=str, default_value="foo/bar/hw")
    HandlerSeconds = device_property(dtype=float, default_value=0.3)
    UseScheduler = device_property(dtype=bool, default_value=False)
    SubscribeSeconds = device_property(dtype=float, default_value=10.0)

    def init_device(self) -> None:
        super().init_device()
        self._position = 0.0
        self._mode = Mode.IDLE
        self.set_change_event("position", True, False)
        self.set_change_event("mode", True, False)
        self._subscriptions = _subscriptions(self, self.UseScheduler, slow_callbacks=1)
        self._unsubscribe: list[Callable[[], None]] = []
        for name, handler in (("position", self._on_position), ("mode", self._on_mode)):
            try:
                unsubscribe = self._subscriptions.subscribe(
                    self.Hw, name, handler, self.SubscribeSeconds
                )
            except (tango.DevFailed, TimeoutError) as error:
                self.set_state(tango.DevState.FAULT)
                self.set_status(f"cannot subscribe to {self.Hw}/{name}: {_reason(error)}")
                return
            self._unsubscribe.append(unsubscribe)
        self.set_state(tango.DevState.ON)

    def delete_device(self) -> None:
        if self._subscriptions.scheduler is None:
            for unsubscribe in self._unsubscribe:
                unsubscribe()
        self._subscriptions.shutdown(self)
        super().delete_device()

    def _on_position(self, event: tango.EventData) -> None:
        if event.err or event.attr_value is None:
            return
        time.sleep(self.HandlerSeconds)  # the rogue part: slow work inside an event callback
        self._position = event.attr_value.value
        self.push_change_event("position", self._position)

    def _on_mode(self, event: tango.EventData) -> None:
        if event.err or event.attr_value is None:
            return
        self._mode = Mode(event.attr_value.value)
        self.push_change_event("mode", self._mode)

    @attribute(dtype=Mode)
    def mode(self) -> Mode:
        return self._mode

    @attribute(dtype=float, unit="mm")
    def position(self) -> float:
        return self._position


def _reason(error: tango.DevFailed | TimeoutError) -> str:
    """The root cause of ``error``, on one line."""
    return root_cause(error) if isinstance(error, tango.DevFailed) else str(error)
