"""SharedProxies: one proxy per device, built once, dropped with its last user."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.proxies import SharedProxies


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
        assert self.release.wait(10.0)
        self.built.append(trl)
        return Proxy(trl)


def test_streams_asking_at_once_share_one_proxy_built_once() -> None:
    factory = CountingFactory()
    factory.release.clear()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)

    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(proxies.acquire, "tango://h:1/a/b/c") for _ in range(8)]
        factory.release.set()
        got = {id(future.result()) for future in asked}

    assert len(got) == 1
    assert factory.built == ["tango://h:1/a/b/c"]


def test_the_last_release_drops_the_proxy_and_the_next_user_gets_a_new_one() -> None:
    factory = CountingFactory()
    proxies: SharedProxies[Proxy] = SharedProxies(factory)
    first = proxies.acquire("a")
    assert proxies.acquire("a") is first
    assert proxies.acquire("b") is not first

    proxies.release("a")
    proxies.release("a")

    assert len(proxies) == 1
    assert proxies.acquire("a") is not first
    assert factory.built == ["a", "b", "a"]


def test_a_failed_build_propagates_and_leaves_nothing_to_release() -> None:
    def unknown(trl: str) -> Proxy:
        raise LookupError(f"{trl} is not defined")

    proxies: SharedProxies[Proxy] = SharedProxies(unknown)

    with pytest.raises(LookupError, match="a/b/c is not defined"):
        proxies.acquire("a/b/c")
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
            proxies.acquire(trl)
            held[trl] = held.get(trl, 0) + 1
        elif held.get(trl):
            proxies.release(trl)
            held[trl] -= 1
    assert len(proxies) == sum(1 for count in held.values() if count)
