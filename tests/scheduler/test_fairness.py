"""WorkerUsage: decay, and a time-free rank that orders keys as their usages do."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.fairness import WorkerUsage


def test_usage_halves_every_half_life() -> None:
    usage: WorkerUsage[str] = WorkerUsage(half_life=2.0)
    usage.charge("slow", 0.8, now=10.0)

    assert usage.usage("slow", 10.0) == pytest.approx(0.8)
    assert usage.usage("slow", 12.0) == pytest.approx(0.4)
    assert usage.usage("slow", 14.0) == pytest.approx(0.2)
    assert usage.usage("never", 14.0) == 0.0


def test_a_quiet_stream_beats_a_slow_one_and_a_flooded_one() -> None:
    usage: WorkerUsage[str] = WorkerUsage()
    now = 0.0
    for _ in range(3):
        now += 0.3
        usage.charge("slow", 0.3, now)
    for _ in range(500):
        now += 0.0001
        usage.charge("flood", 0.0001, now)
    usage.charge("quiet", 0.001, now)

    assert usage.rank("quiet") < usage.rank("flood") < usage.rank("slow")


def test_unused_keys_rank_first_and_equal() -> None:
    usage: WorkerUsage[str] = WorkerUsage()
    usage.charge("used", 0.001, now=1.0)
    usage.charge("ran_in_no_time", 0.0, now=1.0)
    assert usage.rank("never") == usage.rank("ran_in_no_time") < usage.rank("used")


def test_forgotten_key_starts_afresh() -> None:
    usage: WorkerUsage[str] = WorkerUsage()
    usage.charge("gone", 3.0, now=1.0)
    usage.forget("gone")
    assert usage.usage("gone", 1.0) == 0.0
    assert usage.rank("gone") == usage.rank("never")


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life must be positive"):
        WorkerUsage[str](half_life=0)


@given(
    charges=st.lists(
        st.tuples(st.sampled_from("abcd"), st.floats(0, 2), st.floats(0, 1)), max_size=30
    ),
    later=st.floats(0, 100),
)
def test_rank_orders_keys_as_their_usage_does_at_every_later_time(
    charges: list[tuple[str, float, float]], later: float
) -> None:
    usage: WorkerUsage[str] = WorkerUsage()
    now = 0.0
    for key, seconds, gap in charges:
        now += gap
        usage.charge(key, seconds, now)

    by_rank = sorted("abcd", key=usage.rank)
    for moment in (now, now + later):
        usages = [usage.usage(key, moment) for key in by_rank]
        for less_used, more_used in itertools.pairwise(usages):
            assert less_used <= more_used or less_used == pytest.approx(more_used, rel=1e-9)
    for key in "abcd":
        assert usage.usage(key, now + later) <= usage.usage(key, now)
