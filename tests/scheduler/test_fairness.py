"""FairPicker: the least recently used candidate is served first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.fairness import FairPicker


def test_usage_halves_every_half_life() -> None:
    picker: FairPicker[str] = FairPicker(half_life=2.0)
    picker.charge("slow", 0.8, now=10.0)

    assert picker.usage("slow", 10.0) == pytest.approx(0.8)
    assert picker.usage("slow", 12.0) == pytest.approx(0.4)
    assert picker.usage("slow", 14.0) == pytest.approx(0.2)
    assert picker.usage("never", 14.0) == 0.0


def test_a_quiet_stream_beats_a_slow_one_and_a_flooded_one() -> None:
    picker: FairPicker[str] = FairPicker()
    now = 0.0
    for _ in range(3):
        now += 0.3
        picker.charge("slow", 0.3, now)
    for _ in range(500):
        now += 0.0001
        picker.charge("flood", 0.0001, now)
    picker.charge("quiet", 0.001, now)

    assert picker.pick(["slow", "flood", "quiet"], now) == "quiet"
    assert picker.pick(["slow", "flood"], now) == "flood"


def test_ties_go_to_the_earliest_candidate() -> None:
    picker: FairPicker[str] = FairPicker()
    assert picker.pick(["b", "a", "c"], now=5.0) == "b"
    assert picker.pick([], now=5.0) is None


def test_forgotten_key_starts_afresh() -> None:
    picker: FairPicker[str] = FairPicker()
    picker.charge("gone", 3.0, now=1.0)
    picker.forget("gone")
    assert picker.usage("gone", 1.0) == 0.0


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life must be positive"):
        FairPicker[str](half_life=0)


@given(
    charges=st.lists(
        st.tuples(st.sampled_from("abcd"), st.floats(0, 2), st.floats(0, 1)), max_size=30
    ),
    later=st.floats(0, 100),
)
def test_picks_the_minimum_and_usage_only_decays_without_charges(
    charges: list[tuple[str, float, float]], later: float
) -> None:
    picker: FairPicker[str] = FairPicker()
    now = 0.0
    for key, seconds, gap in charges:
        now += gap
        picker.charge(key, seconds, now)

    chosen = picker.pick("abcd", now)

    assert chosen is not None
    assert picker.usage(chosen, now) == min(picker.usage(key, now) for key in "abcd")
    for key in "abcd":
        assert picker.usage(key, now + later) <= picker.usage(key, now)
