"""SharedProxies: one proxy per device, built once, dropped with its last user."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.proxies import (
    BACKOFF_CAP_SECONDS,
    BACKOFF_FACTOR,
    SharedProxies,
    database_of,
)
from milonga.testing import wait_until

WAIT_SECONDS = 60.0
DATABASE = "tango://127.0.0.1:10000"


class Proxy:
    def __init__(self, trl: str) -> None:
        self.trl = trl


class CountingFactory:
    """Builds a `Proxy`, optionally waiting for ``release`` first, and counts the builds."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, trl: str) -> Proxy:
        assert self.release.wait(WAIT_SECONDS)
        self.built.append(trl)
        return Proxy(trl)


def _never(failure: BaseException | None) -> None:
    raise AssertionError("nobody else was building this proxy")


class Told:
    """A `when_built` that remembers what it was told."""

    def __init__(self) -> None:
        self.told: list[BaseException | None] = []

    def __call__(self, failure: BaseException | None) -> None:
        self.told.append(failure)


def _build_in_background(proxies: SharedProxies[Proxy], trl: str) -> Future[Proxy | None]:
    """Start ``proxies.acquire(trl)`` on another thread."""
    pool = ThreadPoolExecutor(1)
    building = pool.submit(proxies.acquire, trl, _never)
    pool.shutdown(wait=False)
    return building


def test_callers_that_wait_share_one_build() -> None:
    factory = CountingFactory()
    factory.release.clear()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)

    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(proxies.acquire, "tango://h:1/a/b/c") for _ in range(8)]
        factory.release.set()
        got = {id(future.result()) for future in asked}

    assert len(got) == 1
    assert factory.built == ["tango://h:1/a/b/c"]


def test_streams_asking_during_a_build_do_not_wait_and_hear_when_it_ends() -> None:
    factory = CountingFactory()
    factory.release.clear()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)
    building = _build_in_background(proxies, "a/b/c")
    wait_until(lambda: len(proxies) == 1, timeout=WAIT_SECONDS)

    waiters = [Told() for _ in range(3)]
    assert [proxies.acquire("a/b/c", waiter) for waiter in waiters] == [None] * 3
    assert all(waiter.told == [] for waiter in waiters)
    factory.release.set()
    proxy = building.result(WAIT_SECONDS)

    assert all(waiter.told == [None] for waiter in waiters)
    assert proxies.acquire("a/b/c", _never) is proxy
    assert factory.built == ["a/b/c"]


def test_a_failed_build_is_told_to_the_streams_that_asked_meanwhile() -> None:
    release = threading.Event()

    def unreachable(trl: str) -> Proxy:
        assert release.wait(WAIT_SECONDS)
        raise TimeoutError(f"the database of {trl} does not answer")

    proxies: SharedProxies[Proxy] = SharedProxies(unreachable)
    building = _build_in_background(proxies, "a/b/c")
    wait_until(lambda: len(proxies) == 1, timeout=WAIT_SECONDS)
    waiter = Told()
    assert proxies.acquire("a/b/c", waiter) is None
    release.set()

    with pytest.raises(TimeoutError, match="does not answer") as raised:
        building.result(WAIT_SECONDS)
    assert waiter.told == [raised.value]
    assert len(proxies) == 0


def test_the_last_release_drops_the_proxy_and_the_next_user_gets_a_new_one() -> None:
    factory = CountingFactory()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)
    first = proxies.acquire("a", _never)
    assert proxies.acquire("a", _never) is first
    assert proxies.acquire("b", _never) is not first

    proxies.release("a")
    proxies.release("a")

    assert len(proxies) == 1
    assert proxies.acquire("a", _never) is not first
    assert factory.built == ["a", "b", "a"]


def test_a_failed_build_propagates_and_leaves_nothing_to_release() -> None:
    def unknown(trl: str) -> Proxy:
        raise LookupError(f"{trl} is not defined")

    proxies: SharedProxies[Proxy] = SharedProxies(unknown)

    with pytest.raises(LookupError, match="a/b/c is not defined"):
        proxies.acquire("a/b/c", _never)
    assert len(proxies) == 0


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc")), max_size=60))
def test_a_device_has_a_proxy_exactly_while_someone_holds_it(
    script: list[tuple[bool, str]],
) -> None:
    factory = CountingFactory()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)
    held: dict[str, int] = {}
    for acquire, trl in script:
        if acquire:
            proxies.acquire(trl, _never)
            held[trl] = held.get(trl, 0) + 1
        elif held.get(trl):
            proxies.release(trl)
            held[trl] -= 1
    assert len(proxies) == sum(1 for count in held.values() if count)


def test_the_database_of_a_trl_is_its_scheme_host_and_port() -> None:
    assert database_of("tango://127.0.0.1:10000/a/b/c") == "tango://127.0.0.1:10000"
    assert database_of("a/b/c") == ""


def test_one_proxy_of_a_database_is_built_at_a_time_and_the_others_ask_again() -> None:
    factory = CountingFactory()
    factory.release.clear()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)
    building = _build_in_background(proxies, f"{DATABASE}/a/b/1")
    wait_until(lambda: len(proxies) == 1, timeout=WAIT_SECONDS)
    same_database = Told()

    assert proxies.acquire(f"{DATABASE}/a/b/2", same_database) is None
    other_database = _build_in_background(proxies, "tango://127.0.0.1:10001/a/b/1")
    wait_until(lambda: len(proxies) == 2, "a build of another database", WAIT_SECONDS)
    factory.release.set()
    building.result(WAIT_SECONDS)
    other_database.result(WAIT_SECONDS)

    assert same_database.told == [None], "a device's success is no answer for another: ask"
    assert proxies.acquire(f"{DATABASE}/a/b/2", _never) is not None
    assert factory.built.count(f"{DATABASE}/a/b/2") == 1


def _failing_build(
    shared: bool,
) -> tuple[SharedProxies[Proxy], Future[Proxy | None], threading.Event]:
    """Proxies whose build of ``DATABASE``'s a/b/1 fails once released, and that failure
    holds for every device of the database if ``shared``."""
    release = threading.Event()

    def unreachable(trl: str) -> Proxy:
        assert release.wait(WAIT_SECONDS)
        raise TimeoutError(f"the database of {trl} does not answer")

    proxies: SharedProxies[Proxy] = SharedProxies(unreachable, shared_failure=lambda _: shared)
    building = _build_in_background(proxies, f"{DATABASE}/a/b/1")
    wait_until(lambda: len(proxies) == 1, timeout=WAIT_SECONDS)
    return proxies, building, release


@pytest.mark.parametrize("shared", [True, False])
def test_a_failure_is_told_to_other_devices_only_if_it_holds_for_the_database(
    shared: bool,
) -> None:
    proxies, building, release = _failing_build(shared)
    same_device, other_device = Told(), Told()
    assert proxies.acquire(f"{DATABASE}/a/b/1", same_device) is None
    assert proxies.acquire(f"{DATABASE}/a/b/2", other_device) is None
    release.set()

    with pytest.raises(TimeoutError) as raised:
        building.result(WAIT_SECONDS)
    assert same_device.told == [raised.value]
    assert other_device.told == [raised.value if shared else None]
    assert len(proxies) == 0


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Unreachable(Exception):
    """Stands for a failure that holds for the whole database."""


def test_a_build_that_cannot_reach_its_database_backs_off_that_database() -> None:
    clock = Clock()
    builds: list[str] = []

    def slow_failing_build(trl: str) -> Proxy:
        builds.append(trl)
        clock.now += 10.0  # the build took 10 s
        raise Unreachable(trl)

    proxies: SharedProxies[Proxy] = SharedProxies(
        slow_failing_build, lambda failure: isinstance(failure, Unreachable), clock
    )
    with pytest.raises(Unreachable):
        proxies.acquire(f"{DATABASE}/a/b/1")

    assert proxies.backoff_left(f"{DATABASE}/x/y/z") == BACKOFF_FACTOR * 10.0
    with pytest.raises(Unreachable):  # another device of it: no build during the backoff
        proxies.acquire(f"{DATABASE}/a/b/2", _never)
    assert builds == [f"{DATABASE}/a/b/1"]
    assert proxies.backoff_left("tango://127.0.0.1:10001/a/b/1") == 0.0

    clock.now += BACKOFF_FACTOR * 10.0
    with pytest.raises(Unreachable):
        proxies.acquire(f"{DATABASE}/a/b/2")
    assert len(builds) == 2


def test_a_backoff_is_capped_and_ends_with_a_build_that_works() -> None:
    clock = Clock()
    reachable = threading.Event()

    def build(trl: str) -> Proxy:
        if reachable.is_set():
            return Proxy(trl)
        clock.now += 3600.0
        raise Unreachable(trl)

    proxies: SharedProxies[Proxy] = SharedProxies(
        build, lambda failure: isinstance(failure, Unreachable), clock
    )
    with pytest.raises(Unreachable):
        proxies.acquire(f"{DATABASE}/a/b/1")
    assert proxies.backoff_left(f"{DATABASE}/a/b/1") == BACKOFF_CAP_SECONDS

    clock.now += BACKOFF_CAP_SECONDS
    reachable.set()
    assert proxies.acquire(f"{DATABASE}/a/b/1") is not None
    assert proxies.backoff_left(f"{DATABASE}/a/b/1") == 0.0
