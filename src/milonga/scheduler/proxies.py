"""One DeviceProxy per device, shared by all the scheduler's streams of that device.

Building a proxy costs a database query, so 200 attributes of 10 devices need 10 of
them, not 200.  A proxy lives while a stream uses it: the last `release` drops it, after
its stream unsubscribed, so dropping it unsubscribes nothing.

Building can block for seconds (a database host that does not answer), so only one
thread builds a device's proxy at a time, and the others need not wait for it: they can
be told when the build has ended, with its failure if it failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")

WhenBuilt = Callable[[BaseException | None], None]
"""Called once a build that another thread ran has ended: with its failure, or None."""


@dataclass(eq=False)
class _Shared(Generic[P]):
    proxy: P | None = None
    users: int = 0
    waiting: list[WhenBuilt] | None = None
    """While a build runs, who to tell when it ends; None when no build runs."""


class _BuildEnd:
    """Waits for a build that another thread runs; raises its failure, if any."""

    def __init__(self) -> None:
        self._ended = threading.Event()
        self._failure: BaseException | None = None

    def tell(self, failure: BaseException | None) -> None:
        self._failure = failure
        self._ended.set()

    def wait(self) -> None:
        self._ended.wait()
        if self._failure is not None:
            raise self._failure


class SharedProxies(Generic[P]):
    """Thread-safe, reference-counted proxies by device TRL, built by ``factory``."""

    def __init__(self, factory: Callable[[str], P]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._shared: dict[str, _Shared[P]] = {}

    def acquire(self, device_trl: str, when_built: WhenBuilt | None = None) -> P | None:
        """The device's proxy, built now if it does not exist; each proxy returned needs
        one `release`.  If building here fails, the error propagates and nothing needs
        releasing.

        While another thread builds it: with ``when_built``, return None at once and call
        ``when_built`` on that thread when the build ends, then ask again; without it,
        wait for the build and share its outcome.
        """
        while True:
            with self._lock:
                shared = self._shared.setdefault(device_trl, _Shared())
                if shared.proxy is not None:
                    shared.users += 1
                    return shared.proxy
                if shared.waiting is None:
                    shared.waiting = []
                    break
                if when_built is not None:
                    shared.waiting.append(when_built)
                    return None
                ended = _BuildEnd()
                shared.waiting.append(ended.tell)
            ended.wait()
        return self._build(device_trl, shared)

    def _build(self, device_trl: str, shared: _Shared[P]) -> P:
        failure: BaseException | None = None
        try:
            proxy = self._factory(device_trl)
        except BaseException as error:
            failure = error
        with self._lock:
            waiting, shared.waiting = shared.waiting or [], None
            if failure is None:
                shared.proxy = proxy
                shared.users += 1
            else:  # nobody holds a proxy that was never built
                del self._shared[device_trl]
        for tell in waiting:
            tell(failure)
        if failure is not None:
            raise failure
        return proxy

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
