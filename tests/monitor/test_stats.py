"""Statistics of performance samples: known values, invariants, and the captured samples."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.monitor import ClientPerfSample, ServerPerfSample, summarise
from milonga.monitor.stats import (
    SAMPLE_LIMIT,
    Metric,
    PerfTable,
    SampleBatch,
    summarise_client_batches,
    summarise_client_perf,
    summarise_server_batches,
    summarise_server_perf,
    time_unit,
)
from tests.monitor.data import snapshot

micros = st.integers(min_value=0, max_value=10**9)
samples = st.lists(micros, min_size=1, max_size=300)


def test_one_value_has_no_spread_and_no_percentiles() -> None:
    stats = summarise([127])

    assert (stats.count, stats.mean, stats.standard_error, stats.median) == (1, 127, 0, 127)
    assert (stats.minimum, stats.maximum) == (127, 127)
    assert (stats.p1, stats.p10, stats.p90, stats.p99) == (None, None, None, None)


def test_the_standard_error_is_the_sample_deviation_over_root_n() -> None:
    values = [1] * 19 + [2]

    stats = summarise(values)

    assert stats.mean == pytest.approx(1.05)
    assert stats.standard_error == pytest.approx(statistics.stdev(values) / math.sqrt(20))


def test_deciles_interpolate_between_samples() -> None:
    stats = summarise(list(range(1, 11)))

    assert stats.p10 == pytest.approx(1.1)
    assert stats.p90 == pytest.approx(9.9)
    assert stats.p1 is None


@given(samples)
def test_the_order_statistics_are_ordered(values: list[int]) -> None:
    stats = summarise(values)

    present = [
        v for v in (stats.p1, stats.p10, stats.median, stats.p90, stats.p99) if v is not None
    ]
    assert [stats.minimum, *present, stats.maximum] == sorted(
        [stats.minimum, *present, stats.maximum]
    )
    assert stats.minimum <= stats.mean <= stats.maximum
    assert stats.standard_error >= 0
    assert stats.count == len(values)


@given(samples)
def test_percentiles_appear_only_from_enough_samples(values: list[int]) -> None:
    stats = summarise(values)

    assert (stats.p10 is not None) == (len(values) >= 10)
    assert (stats.p90 is not None) == (len(values) >= 10)
    assert (stats.p1 is not None) == (len(values) >= 100)
    assert (stats.p99 is not None) == (len(values) >= 100)


@given(samples, st.randoms())
def test_the_order_of_the_samples_does_not_matter(values: list[int], rng: random.Random) -> None:
    shuffled = list(values)
    rng.shuffle(shuffled)

    assert summarise(shuffled) == summarise(values)


@given(micros)
def test_a_time_unit_keeps_the_value_between_1_and_1000(value: int) -> None:
    unit, size = time_unit(value)

    assert unit in {"μs", "ms", "s"}
    assert value / size < 1000 or unit == "s"
    assert value / size >= 1 or unit == "μs"


def test_no_samples_cannot_be_summarised() -> None:
    with pytest.raises(ValueError, match="no values"):
        summarise([])


def test_the_server_table_has_gaps_without_the_first_and_push_times() -> None:
    publisher = snapshot("publisher_2.json")
    assert publisher.server is not None
    assert publisher.server.perf is not None

    table = summarise_server_perf(publisher.server.perf)

    assert [(row.metric, row.attribute) for row in table.rows] == [
        (Metric.EVENT_GAPS, None),
        (Metric.PUSH_TIME, None),
    ]
    assert [row.statistics.count for row in table.rows] == [119, 120]
    assert all(row.in_micros for row in table.rows)


def test_the_client_table_leaves_discarded_events_out_of_the_timings() -> None:
    subscriber = snapshot("subscriber_2.json")
    assert subscriber.client is not None
    assert subscriber.client.perf is not None

    table = summarise_client_perf(subscriber.client.perf)

    rows = {(row.metric, row.attribute): row for row in table.rows}
    assert list(rows) == [
        (Metric.EVENT_GAPS, None),
        (Metric.SLEEP_TIME, None),
        (Metric.LATENCY, None),
        (Metric.CALLBACKS, None),
        (Metric.WAKE_COUNT, None),
        (Metric.PROCESSING_TIME, "value"),
        (Metric.LATENCY, "value"),
    ]
    assert table.samples == 122
    assert rows[Metric.SLEEP_TIME, None].statistics.count == 120  # 2 discarded
    assert rows[Metric.LATENCY, None].statistics.count == 120
    assert table.get(Metric.LATENCY) == table.get(Metric.LATENCY, "value")  # the only one
    assert rows[Metric.CALLBACKS, None].statistics.minimum == 1
    assert rows[Metric.WAKE_COUNT, None].statistics.count == 122  # woken for discarded ones
    assert not rows[Metric.WAKE_COUNT, None].in_micros
    # The relay's callback sleeps 2 ms.
    processing = table.get(Metric.PROCESSING_TIME, "value")
    assert processing is not None
    assert 2000 <= processing.median < 20000


def test_a_row_without_samples_is_left_out() -> None:
    sample = ClientPerfSample("", None, 5, 3, None, 2, 1, discarded=False)

    table = summarise_client_perf([sample])

    metrics = [row.metric for row in table.rows]
    assert Metric.EVENT_GAPS not in metrics
    assert Metric.LATENCY not in metrics
    assert table.get(Metric.PROCESSING_TIME, "") is not None  # no attribute
    assert summarise_server_perf([ServerPerfSample(None, 4)]).rows[0].metric is Metric.PUSH_TIME


@pytest.mark.parametrize(("count", "full"), [(SAMPLE_LIMIT - 1, False), (SAMPLE_LIMIT, True)])
def test_a_table_of_as_many_samples_as_the_process_keeps_is_full(count: int, full: bool) -> None:
    table = summarise_server_perf([ServerPerfSample(100, 10)] * count)

    assert table.samples == count
    assert table.full is full


def test_the_first_gap_after_sampling_starts_is_left_out_on_both_sides() -> None:
    """cppTango measures it from the last event sampled before sampling was off."""
    pushed = [ServerPerfSample(9_000_000, 30), ServerPerfSample(100_000, 20)]
    handled = [
        ClientPerfSample("value", 8_000_000, 10, 50, 200, 1, 1, discarded=False),
        ClientPerfSample("value", 100_000, 10, 50, 200, 1, 1, discarded=False),
    ]

    server = summarise_server_perf(pushed, sampling_just_started=True)
    client = summarise_client_perf(handled, sampling_just_started=True)

    server_gaps = server.get(Metric.EVENT_GAPS)
    client_gaps = client.get(Metric.EVENT_GAPS)
    assert server_gaps is not None
    assert client_gaps is not None
    assert (server_gaps.count, server_gaps.maximum) == (1, 100_000)
    assert server.get(Metric.PUSH_TIME) == summarise([30, 20])  # only the gap is unknown
    assert (client_gaps.count, client_gaps.maximum) == (1, 100_000)
    assert client.get(Metric.SLEEP_TIME) == summarise([10, 10])
    assert summarise_server_perf(pushed).rows[0].statistics.count == 2


def test_a_table_of_several_queries_leaves_out_the_first_gap_of_each_that_needs_it() -> None:
    """Each query's first gap is judged on its own: one started sampling, one did not."""
    started = SampleBatch([ServerPerfSample(9_000_000, 30), ServerPerfSample(100_000, 20)], True)
    going_on = SampleBatch([ServerPerfSample(200_000, 40)], False)

    table = summarise_server_batches([started, going_on])

    assert table.get(Metric.EVENT_GAPS) == summarise([100_000, 200_000])
    assert table.get(Metric.PUSH_TIME) == summarise([30, 20, 40])
    assert (table.samples, table.full) == (3, False)


def test_a_table_of_several_queries_is_full_if_one_query_filled_the_buffer() -> None:
    full = SampleBatch([ServerPerfSample(100, 10)] * SAMPLE_LIMIT)
    small = SampleBatch([ServerPerfSample(100, 10)] * 10)

    assert summarise_server_batches([full, small]).full
    assert not summarise_server_batches([small] * 30).full  # 300 samples, but 10 per query


@given(st.lists(st.lists(micros, max_size=20), min_size=1, max_size=5), st.data())
def test_the_table_of_several_queries_is_that_of_their_samples_together(
    gaps: list[list[int]], data: st.DataObject
) -> None:
    """Apart from the first gap of a query that started sampling, batches change nothing."""
    batches = [
        SampleBatch(
            [
                ClientPerfSample(
                    data.draw(st.sampled_from(["a", "b", ""])),
                    gap,
                    10,
                    gap // 3,
                    data.draw(st.none() | micros),
                    1,
                    data.draw(st.integers(0, 3)),
                    discarded=data.draw(st.booleans()),
                )
                for gap in query
            ]
        )
        for query in gaps
    ]

    together = summarise_client_perf([s for batch in batches for s in batch.samples])

    assert summarise_client_batches(batches) == PerfTable(
        together.rows,
        together.samples,
        None if len(batches) == 1 else max(len(b.samples) for b in batches),
    )


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=10, max_size=300))
def test_percentiles_are_those_of_statistics_quantiles(values: list[int]) -> None:
    summary = summarise(values)
    deciles = statistics.quantiles(values, n=10)
    assert (summary.p10, summary.p90) == (deciles[0], deciles[-1])
    if len(values) >= 100:
        percentiles = statistics.quantiles(values, n=100)
        assert (summary.p1, summary.p99) == (percentiles[0], percentiles[-1])
