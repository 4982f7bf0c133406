"""A device with a ``DevEnum`` attribute and its state, both pushing change events."""

from __future__ import annotations

import enum

from tango import DevState
from tango.server import Device, attribute, command


class Mode(enum.IntEnum):
    """The modes of `Modes`: its ``mode`` attribute's labels."""

    IDLE = 0
    SCANNING = 1
    FAULT = 2


class Modes(Device):
    """``mode`` starts IDLE and the state ON; `Scan` moves to SCANNING and MOVING, pushing a
    change event of each."""

    def init_device(self) -> None:
        super().init_device()
        self._mode = Mode.IDLE
        self.set_change_event("mode", True, False)
        self.set_change_event("State", True, False)
        self.set_state(DevState.ON)

    @attribute(dtype=Mode)
    def mode(self) -> Mode:
        return self._mode

    @command
    def Scan(self) -> None:
        self._mode = Mode.SCANNING
        self.push_change_event("mode", self._mode)
        self.set_state(DevState.MOVING)
        self.push_change_event("State", DevState.MOVING)
