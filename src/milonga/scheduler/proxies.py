"""One DeviceProxy per device, shared by all the scheduler's streams of that device.

Building a proxy costs a database query, so 200 attributes of 10 devices need 10 of
them, not 200.  A proxy lives while a stream uses it: the last `release` drops it, after
its stream unsubscribed, so dropping it unsubscribes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(eq=False)
class _Shared(Generic[P]):
    users: int = 0
    proxy: P | None = None
    building: threading.Lock = field(default_factory=threading.Lock)


class SharedProxies(Generic[P]):
    """Thread-safe, reference-counted proxies by device TRL, built by ``factory``."""

    def __init__(self, factory: Callable[[str], P]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._shared: dict[str, _Shared[P]] = {}

    def acquire(self, device_trl: str) -> P:
        """The device's proxy, built on first use; each call needs one `release`.

        If building fails, the error propagates and nothing needs releasing.
        """
        with self._lock:
            shared = self._shared.setdefault(device_trl, _Shared())
            shared.users += 1
        try:
            with shared.building:  # one build per device, however many streams ask at once
                if shared.proxy is None:
                    shared.proxy = self._factory(device_trl)
                return shared.proxy
        except BaseException:
            self.release(device_trl)
            raise

    def release(self, device_trl: str) -> None:
        """One user of the device's proxy is done with it; the last one drops it."""
        with self._lock:
            shared = self._shared[device_trl]
            shared.users -= 1
            if shared.users == 0:
                del self._shared[device_trl]

    def __len__(self) -> int:
        """How many devices have a proxy in use or being built."""
        with self._lock:
            return len(self._shared)
