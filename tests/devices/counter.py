"""A small device for sandbox tests: a counter that pushes change and archive events."""

from __future__ import annotations

from tango.server import Device, attribute, command, device_property


class Counter(Device):
    """Holds an integer starting at the `Start` property; `Increment` pushes a change and an
    archive event."""

    Start = device_property(dtype=int, default_value=0)

    def init_device(self) -> None:
        super().init_device()
        self._value: int = self.Start
        self.set_change_event("value", True, False)
        self.set_archive_event("value", True, False)

    @attribute(dtype=int)
    def value(self) -> int:
        return self._value

    @command
    def Increment(self) -> None:
        self._value += 1
        self.push_change_event("value", self._value)
        self.push_archive_event("value", self._value)
