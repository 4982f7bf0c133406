"""Device classes of the demo control system."""

from __future__ import annotations

import enum
import logging
import threading
import time

import tango
from tango.server import Device, attribute, command, device_property

logger = logging.getLogger(__name__)


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
        print(f"Scan complete in {elapsed:.2f} s -- pushed Mode.IDLE", flush=True)

    def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        self.push_change_event("mode", mode)
