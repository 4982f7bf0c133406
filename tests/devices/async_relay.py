"""An asyncio device server for sandbox tests: a relay written with coroutines throughout.

`AsyncRelay` runs in PyTango's asyncio green mode, so every command, attribute read and
standard method is a coroutine run on the server's one event loop.  It pushes change
events of its own attribute ``relayed`` (a DevLong, change detection off, so each push is
one event) from that loop: ``Push(value)`` relays a value a client gives.

``Follow(trl_attr)`` subscribes, through the device's `milonga.AsyncCallbackScheduler`,
to another device's attribute (``tango://host:port/domain/family/member/attribute``) and
relays each value it receives the same way, from a coroutine callback on the loop.
``delete_device`` closes the scheduler.
"""

from __future__ import annotations

import tango
from tango.server import Device, attribute, command

from milonga import AsyncCallbackScheduler


class AsyncRelay(Device):
    """Relays values, pushed by ``Push`` or followed through ``Follow``, as change events
    of ``relayed``; ``relay_count`` counts the values relayed since the device started."""

    green_mode = tango.GreenMode.Asyncio

    # PyTango's stubs describe the synchronous mode, where init_device returns None; an
    # asyncio green-mode device must make it a coroutine.
    async def init_device(self) -> None:  # type: ignore[override]
        await super().init_device()
        self._relayed = 0
        self._relay_count = 0
        self._scheduler = AsyncCallbackScheduler(name=self.get_name())
        self.set_change_event("relayed", True, False)

    async def delete_device(self) -> None:  # type: ignore[override]
        await self._scheduler.aclose()
        print(f"{self.get_name()}: scheduler closed", flush=True)  # for the tests to see
        await super().delete_device()

    async def relay(self, value: int) -> None:
        """Make ``value`` the value of ``relayed`` and push it as a change event.

        Call it on the server's loop only: pushing from another thread can crash an
        asyncio device server (cppTango issue 1202).
        """
        self._relayed = value
        self._relay_count += 1
        self.push_change_event("relayed", value)

    @attribute(dtype=tango.DevLong)
    async def relayed(self) -> int:
        return self._relayed

    @attribute(dtype=tango.DevLong)
    async def relay_count(self) -> int:
        return self._relay_count

    @command(dtype_in=tango.DevLong)
    async def Push(self, value: int) -> None:
        """Relay ``value``: push it as a change event of ``relayed``."""
        await self.relay(value)

    @command(dtype_in=str)
    async def Follow(self, trl_attr: str) -> None:
        """Relay each value of the attribute ``trl_attr``, starting with its current one;
        return once subscribed."""
        device, _, attr_name = trl_attr.rpartition("/")
        await self._scheduler.register_event_callback(
            device, attr_name, tango.EventType.CHANGE_EVENT, self._followed
        )

    async def _followed(self, event: tango.EventData) -> None:
        reading = event.attr_value
        if not event.err and reading is not None:
            await self.relay(reading.value)
