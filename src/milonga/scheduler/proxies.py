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

A build that fails for the whole database (it cannot be reached) starts a backoff: no
proxy of that database is built for `BACKOFF_FACTOR` times as long as the failed build
took, `BACKOFF_CAP_SECONDS` at most, and asking meanwhile raises that failure again at
once.  A database that never answers then holds cppTango's lock a fifth of the time at
most, however many streams retry it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")

BACKOFF_FACTOR = 4.0
"""How many times as long as a build that could not reach its database no other build of
that database starts."""
BACKOFF_CAP_SECONDS = 60.0
"""The longest backoff, so that a database back in service is noticed within a minute."""

_logger = logging.getLogger("milonga.scheduler")

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


@dataclass(frozen=True)
class Backoff:
    """No proxy of a database is built before ``until`` (on the proxies' clock), because
    a build could not reach it, failing with ``failure``."""

    until: float
    failure: BaseException


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
    its database (the database cannot be reached), rather than for its device alone;
    such a failure starts the database's `Backoff`.  ``clock`` times builds and backoffs.
    """

    def __init__(
        self,
        factory: Callable[[str], P],
        shared_failure: Callable[[BaseException], bool] = _never_shared,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._shared_failure = shared_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._shared: dict[str, _Shared[P]] = {}
        self._builds: dict[str, _Build] = {}  # by database
        self._backoffs: dict[str, Backoff] = {}  # by database

    def acquire(self, device_trl: str, when_built: WhenBuilt | None = None) -> P | None:
        """The device's proxy, built now if it does not exist; each proxy returned needs
        one `release`.  If building here fails, the error propagates and nothing needs
        releasing.

        While another thread builds a proxy of the same database: with ``when_built``,
        return None at once and call ``when_built`` on that thread when the build ends;
        without it, wait for the build, then raise its failure if it holds for this
        device too, or ask again.  During the database's `backoff`, raise the failure
        that started it, without building.
        """
        database = database_of(device_trl)
        while True:
            with self._lock:
                shared = self._shared.get(device_trl)
                if shared is not None:
                    shared.users += 1
                    return shared.proxy
                backoff = self._backoffs.get(database)
                if backoff is not None and self._clock() < backoff.until:
                    raise backoff.failure.with_traceback(None)
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
        started = self._clock()
        try:
            proxy = self._factory(device_trl)
        except BaseException as error:
            failure = error
        shared = failure is not None and self._shared_failure(failure)
        with self._lock:
            build = self._builds.pop(database)
            if failure is None:
                self._shared[device_trl] = _Shared(proxy)
                self._backoffs.pop(database, None)
            elif shared:
                self._back_off(database, device_trl, self._clock() - started, failure)
        for device, tell in build.waiting:
            tell(failure if device == device_trl or shared else None)
        if failure is not None:
            raise failure
        return proxy

    def _back_off(
        self, database: str, device_trl: str, build_seconds: float, failure: BaseException
    ) -> None:
        """Start ``database``'s backoff after a build of ``device_trl`` that could not
        reach it in ``build_seconds``.  Holds the lock."""
        delay = min(BACKOFF_FACTOR * build_seconds, BACKOFF_CAP_SECONDS)
        self._backoffs[database] = Backoff(self._clock() + delay, failure)
        _logger.debug(
            "database %s unreachable: building a proxy of %s failed after %.2f s; "
            "no proxy of it is built for %.2f s",
            database or "(TANGO_HOST)",
            device_trl,
            build_seconds,
            delay,
            extra={"build_seconds": build_seconds, "backoff_seconds": delay},
        )

    def backoff_left(self, device_trl: str) -> float:
        """Seconds until a proxy of the device's database may be built again; 0 unless
        it is in a `Backoff`."""
        with self._lock:
            backoff = self._backoffs.get(database_of(device_trl))
        return 0.0 if backoff is None else max(0.0, backoff.until - self._clock())

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
