"""One DeviceProxy per device, shared by all the scheduler's streams of that device.

Building a proxy costs a database query, so 200 attributes of 10 devices need 10 of
them, not 200.  A proxy lives while a stream uses it: the last `release` drops it, after
its stream unsubscribed, so dropping it unsubscribes nothing.

Building can block for seconds, and holds up more than its caller: cppTango builds one
proxy at a time in a process, so a database host that never answers makes every build
in the process wait for its own to time out.  Only one proxy of a given database is
therefore built at a time, whatever the device: a hanging database then delays the
others' builds by one timeout, not by one timeout per device of it.  Callers that ask
meanwhile need not wait: they can be told when the build has ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")

WhenBuilt = Callable[[BaseException | None], None]
"""Called once a build that another thread ran has ended: with its failure if that holds
for the caller's device too, else with None, and the caller asks again."""


def database_of(device_trl: str) -> str:
    """The database part, ``tango://host:port``, of a full device TRL; "" for a bare
    ``domain/family/member``, which all share the default database."""
    parts = device_trl.rsplit("/", 3)
    return parts[0] if len(parts) == 4 else ""


@dataclass(eq=False)
class _Shared(Generic[P]):
    proxy: P
    users: int = 1


@dataclass(eq=False)
class _Build:
    """A build in progress, and who to tell when it ends: (device TRL, whom) pairs."""

    waiting: list[tuple[str, WhenBuilt]] = field(default_factory=list)


class _BuildEnd:
    """Waits for a build that another thread runs; raises its failure, if told one."""

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


def _never_shared(failure: BaseException) -> bool:
    return False


class SharedProxies(Generic[P]):
    """Thread-safe, reference-counted proxies by device TRL, built by ``factory``, one
    build per database at a time.

    ``shared_failure`` tells whether a failed build's error holds for every device of
    its database (the database cannot be reached), rather than for its device alone.
    """

    def __init__(
        self,
        factory: Callable[[str], P],
        shared_failure: Callable[[BaseException], bool] = _never_shared,
    ) -> None:
        self._factory = factory
        self._shared_failure = shared_failure
        self._lock = threading.Lock()
        self._shared: dict[str, _Shared[P]] = {}
        self._builds: dict[str, _Build] = {}  # by database

    def acquire(self, device_trl: str, when_built: WhenBuilt | None = None) -> P | None:
        """The device's proxy, built now if it does not exist; each proxy returned needs
        one `release`.  If building here fails, the error propagates and nothing needs
        releasing.

        While another thread builds a proxy of the same database: with ``when_built``,
        return None at once and call ``when_built`` on that thread when the build ends;
        without it, wait for the build, then raise its failure if it holds for this
        device too, or ask again.
        """
        database = database_of(device_trl)
        while True:
            with self._lock:
                shared = self._shared.get(device_trl)
                if shared is not None:
                    shared.users += 1
                    return shared.proxy
                build = self._builds.get(database)
                if build is None:
                    self._builds[database] = _Build()
                    break
                if when_built is not None:
                    build.waiting.append((device_trl, when_built))
                    return None
                ended = _BuildEnd()
                build.waiting.append((device_trl, ended.tell))
            ended.wait()
        return self._build(device_trl, database)

    def _build(self, device_trl: str, database: str) -> P:
        """Build the proxy of ``device_trl``, then tell those who asked meanwhile."""
        failure: BaseException | None = None
        try:
            proxy = self._factory(device_trl)
        except BaseException as error:
            failure = error
        with self._lock:
            build = self._builds.pop(database)
            if failure is None:
                self._shared[device_trl] = _Shared(proxy)
        shared = failure is not None and self._shared_failure(failure)
        for device, tell in build.waiting:
            tell(failure if device == device_trl or shared else None)
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
            return len(self._shared) + len(self._builds)
