"""`envelope`: a long series reduced to each time bucket's least and greatest value."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.report.timeline import bucket_of, envelope

values_or_gaps = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), st.just(math.nan)
)


@st.composite
def series(draw: st.DrawFn, gaps: bool = True) -> tuple[list[float], list[float]]:
    """Times that only grow (some equal) and values, NaN among them if ``gaps``."""
    steps = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 100.0]), min_size=1, max_size=300))
    times = [1_800_000_000.0]
    for step in steps[1:]:
        times.append(times[-1] + step)
    kind = values_or_gaps if gaps else st.floats(-1e9, 1e9, allow_nan=False)
    values = draw(st.lists(kind, min_size=len(times), max_size=len(times)))
    return times, values


def points(times: list[float], values: list[float]) -> list[tuple[float, float]]:
    return [(t, v) for t, v in zip(times, values, strict=True) if not math.isnan(v)]


@given(series(), st.integers(1, 40))
def test_the_result_is_bounded_by_the_buckets(
    data: tuple[list[float], list[float]], buckets: int
) -> None:
    times, values = data
    out_times, out_values = envelope(times, values, buckets)
    assert len(out_times) == len(out_values) <= max(len(times), 4 * buckets)
    if not any(math.isnan(v) for v in values):
        assert len(out_values) <= max(len(times), 2 * buckets)


@given(series(gaps=False), st.integers(1, 40))
def test_a_series_without_gaps_gives_at_most_two_points_per_bucket(
    data: tuple[list[float], list[float]], buckets: int
) -> None:
    times, values = data
    out_times, _ = envelope(times, values, buckets)
    assert len(out_times) <= max(len(times), 2 * buckets)


@given(series(), st.integers(1, 40))
def test_each_bucket_keeps_its_least_and_greatest_value_in_time_order(
    data: tuple[list[float], list[float]], buckets: int
) -> None:
    times, values = data
    out_times, out_values = envelope(times, values, buckets)
    assert list(out_times) == sorted(out_times)
    kept = points(list(out_times), list(out_values))
    assert set(kept) <= set(points(times, values))  # nothing made up
    by_bucket: dict[int, list[float]] = {}
    for time, value in points(times, values):
        by_bucket.setdefault(bucket_of(time, times[0], times[-1], buckets), []).append(value)
    for bucket, seen in by_bucket.items():
        inside = [v for t, v in kept if bucket_of(t, times[0], times[-1], buckets) == bucket]
        assert min(seen) in inside
        assert max(seen) in inside


@given(series(), st.integers(1, 40))
def test_a_gap_is_never_bridged(data: tuple[list[float], list[float]], buckets: int) -> None:
    """Two points next to each other in the result have no NaN between them in the series."""
    times, values = data
    out_times, out_values = envelope(times, values, buckets)
    where: dict[tuple[float, float], list[int]] = {}
    for i, point in enumerate(zip(times, values, strict=True)):
        where.setdefault(point, []).append(i)
    for first, second in pairwise(zip(out_times, out_values, strict=True)):
        if math.isnan(first[1]) or math.isnan(second[1]):
            continue
        assert any(
            not any(math.isnan(v) for v in values[start:end])
            for start in where[first]
            for end in where[second]
            if start < end
        ), (first, second)


@given(series(), st.integers(1, 40))
def test_a_series_within_the_limit_is_not_reduced(
    data: tuple[list[float], list[float]], buckets: int
) -> None:
    times, values = data
    if len(times) > 2 * buckets:
        times, values = times[: 2 * buckets], values[: 2 * buckets]
    out_times, out_values = envelope(times, values, buckets)
    assert list(out_times) == times
    assert [v for v in out_values if not math.isnan(v)] == [v for v in values if not math.isnan(v)]
    assert len(out_values) == len(values)


def test_a_spike_survives_the_reduction() -> None:
    times = [float(t) for t in range(10_000)]
    values = [0.0] * 10_000
    values[5_000] = 42.0
    out_times, out_values = envelope(times, values, 100)
    assert len(out_values) <= 200
    assert (5_000.0, 42.0) in zip(out_times, out_values, strict=True)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="at least 1 bucket, got 0"):
        envelope([0.0], [0.0], 0)
    with pytest.raises(ValueError, match="as many times as values, got 2 and 1"):
        envelope([0.0, 1.0], [0.0], 10)
