"""The benchmark harness (pure unit tests), one real quick run of ``python -m benchmarks``,
tiny real runs of each CallbackScheduler benchmark, and their measurements ending right
however far behind Tango's event thread is (held in a callback to make it so)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import tango

from benchmarks import (
    async_scheduler,
    exporter,
    findings,
    monitor,
    raw_pytango,
    report,
    scheduler,
    testing,
)
from benchmarks.__main__ import main
from benchmarks.harness import (
    REGISTRY,
    Measurement,
    Nudge,
    Options,
    Registry,
    UnknownBenchmarkError,
    median_of_runs,
    percentile,
    render_table,
    wait_until,
    write_json,
)
from milonga.monitor import Reply, resolve_servers
from milonga.sandbox import TangoSandbox
from milonga.scheduler import DEFAULT_QUEUE_SIZE, CallbackScheduler

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_SECONDS = 240  # under the suite's 300 s per test, to say which step hung
WAIT_SECONDS = 60.0  # a safety net only: every wait ends on a condition


def _nothing(options: Options) -> list[Measurement]:
    return []


def test_median_of_runs_takes_the_median_of_each_metric_separately() -> None:
    runs = [{"rate": 30.0, "lost": 0.0}, {"rate": 10.0, "lost": 7.0}, {"rate": 20.0, "lost": 1.0}]

    assert median_of_runs(runs) == {"rate": 20.0, "lost": 1.0}


def test_median_of_an_even_number_of_runs_averages_the_middle_two() -> None:
    assert median_of_runs([{"t": 1.0}, {"t": 2.0}, {"t": 4.0}, {"t": 100.0}]) == {"t": 3.0}


def test_percentile_is_an_observed_value() -> None:
    values = [float(v) for v in range(100, 0, -1)]

    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([5.0, 1.0, 3.0], 0.99) == 5.0


def test_quick_runs_fewer_repeats_than_a_full_run() -> None:
    assert 1 < Options(quick=True).repeats < Options(quick=False).repeats


def test_ratio_compares_value_to_the_raw_pytango_baseline() -> None:
    assert Measurement("b", "rate", 50.0, "events/s", baseline=200.0).ratio == 0.25
    assert Measurement("b", "rate", 50.0, "events/s").ratio is None


def test_json_has_baseline_and_ratio_only_for_compared_measurements() -> None:
    plain = Measurement("noop", "rate", 1.5, "events/s")
    compared = Measurement("milonga", "rate", 30.0, "events/s", baseline=20.0)

    assert plain.to_json() == {"name": "noop", "metric": "rate", "value": 1.5, "unit": "events/s"}
    assert compared.to_json() == {
        "name": "milonga",
        "metric": "rate",
        "value": 30.0,
        "unit": "events/s",
        "baseline": 20.0,
        "ratio": 1.5,
    }


def test_write_json_writes_a_list_of_measurement_objects(tmp_path: Path) -> None:
    measurements = [
        Measurement("a", "total", 0.5, "s"),
        Measurement("b", "rate", 30.0, "events/s", baseline=20.0),
    ]
    path = tmp_path / "out.json"

    write_json(measurements, path)

    assert json.loads(path.read_text()) == [m.to_json() for m in measurements]


def test_table_has_a_header_and_one_aligned_row_per_measurement() -> None:
    table = render_table(
        [
            Measurement("noop_callback_rate", "delivered rate", 27123.4, "events/s"),
            Measurement("milonga_rate", "delivered rate", 13561.7, "events/s", baseline=27123.4),
            Measurement("latency", "median", 0.01234, "ms"),
        ]
    )

    header, rule, *rows = table.splitlines()
    assert header.split() == ["benchmark", "metric", "value", "unit", "baseline", "ratio"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert rows[0].split() == ["noop_callback_rate", "delivered", "rate", "27,123", "events/s"]
    assert rows[1].split()[-2:] == ["27,123", "0.50"]
    assert rows[2].split() == ["latency", "median", "0.0123", "ms"]
    # Values are right-aligned: they end in the same column.
    assert rows[0].index("27,123") + len("27,123") == rows[2].index("0.0123") + len("0.0123")


def test_select_runs_named_benchmarks_in_the_order_given_or_all_in_registration_order() -> None:
    registry = Registry()
    for name in ("first", "second", "third"):
        registry.add(name, f"the {name} one")(_nothing)

    assert [b.name for b in registry.select(["third", "first"])] == ["third", "first"]
    assert [b.name for b in registry.select([])] == ["first", "second", "third"]


def test_unknown_name_error_names_the_culprit_and_the_valid_names() -> None:
    registry = Registry()
    registry.add("known", "a benchmark")(_nothing)

    with pytest.raises(UnknownBenchmarkError, match=r"'nope'.*valid names are known"):
        registry.select(["known", "nope"])


def test_a_name_cannot_be_registered_twice() -> None:
    registry = Registry()
    registry.add("twice", "a benchmark")(_nothing)

    with pytest.raises(ValueError, match="twice"):
        registry.add("twice", "again")(_nothing)


class FakeClock:
    """A clock that only `sleep` moves, so that waits run without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_until_nudges_each_time_progress_stalls_and_never_while_it_moves() -> None:
    clock = FakeClock()
    nudged_at: list[float] = []

    wait_until(
        lambda: clock.now >= 2.0,
        timeout=10.0,
        what="the test",
        # Moves at every poll for 1 s, then stalls.
        nudge=Nudge(lambda: min(clock.now, 1.0), lambda: nudged_at.append(clock.now), 0.3),
        poll_seconds=0.01,
        clock=clock,
        sleep=clock.sleep,
    )

    assert nudged_at == pytest.approx([1.3, 1.6, 1.9], abs=0.02)


def test_wait_until_gives_up_naming_what_it_waited_for() -> None:
    clock = FakeClock()

    with pytest.raises(RuntimeError, match=r"the sky falling did not happen within 2 s"):
        wait_until(lambda: False, 2.0, "the sky falling", clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(2.0, abs=0.01)


def test_cli_rejects_an_unknown_name_with_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["noop_callback_rate", "no_such_benchmark"])

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "'no_such_benchmark'" in err
    assert all(name in err for name in REGISTRY.names)


def test_the_raw_pytango_baselines_are_registered_before_the_scheduler_benchmarks() -> None:
    baselines = ["noop_callback_rate", "slow_callback_latency", "sync_read_subscribe_200"]
    compared = [
        *(f"scheduler_{name}" for name in ("fairness", "noop_rate", "handoff")),
        *("scheduler_subscribe_200", "scheduler_flood", "scheduler_busy_queues"),
        *(f"async_{name}" for name in ("fairness", "noop_rate", "handoff")),
    ]
    others = ["monitor_snapshot", "monitor_findings", "exporter", "lrc_round_trip"]
    others += ["lrc_back_to_back_100", "report", "testing_assert_event"]

    names = REGISTRY.names
    assert sorted(names) == sorted([*baselines, *compared, *others])
    assert names[:3] == baselines  # a full run measures the baselines first


def test_quick_run_of_one_benchmark_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), "noop_callback_rate"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert f"PyTango {tango.__version__}" in result.stdout.splitlines()[0]
    assert "Traceback" not in result.stderr
    measurements = json.loads(out.read_text())
    assert [(m["name"], set(m)) for m in measurements] == [
        ("noop_callback_rate", {"name", "metric", "value", "unit"})
    ] * len(measurements)
    by_metric = {m["metric"]: m for m in measurements}
    assert by_metric["delivered rate"]["unit"] == "events/s"
    assert by_metric["delivered rate"]["value"] > 0
    lost = next(m for m in measurements if m["metric"].startswith("lost"))
    assert lost["unit"] == "events"
    assert lost["value"] >= 0
    for m in measurements:
        assert m["metric"] in result.stdout


# -- tiny real runs of the scheduler benchmarks (one repeat, small sizes) -----------------


def _by_metric(measurements: list[Measurement], name: str) -> dict[str, Measurement]:
    assert {m.name for m in measurements} == {name}
    return {m.metric: m for m in measurements}


def test_fairness_compares_both_thread_counts_with_raw_pytango() -> None:
    metrics = _by_metric(scheduler.fairness(window=2.0, repeats=1), "scheduler_fairness")

    for threads in ("2 threads", "1 thread"):
        for statistic in ("median", "p99", "max"):
            measurement = metrics[f"latency {statistic}, {threads}"]
            assert measurement.unit == "ms"
            assert measurement.baseline is not None
        assert metrics[f"growth per slow event, {threads}"].baseline is not None
    # Raw latency grows by ~200 ms per slow event; one worker waits for one slow callback.
    one_thread = metrics["latency max, 1 thread"]
    assert one_thread.baseline is not None
    assert one_thread.value < one_thread.baseline


def test_noop_rate_drops_nothing_from_a_queue_holding_the_whole_burst() -> None:
    metrics = _by_metric(scheduler.noop_rate(burst=2000, repeats=1), "scheduler_noop_rate")

    rate = metrics["delivered rate, queue of 2,000"]
    assert rate.value > 0
    assert rate.baseline is not None
    assert rate.baseline > 0
    assert metrics["dropped by the queue of 2,000"].value == 0
    assert metrics["dropped by the queue of 32"].value >= 0
    assert metrics["lost in Tango, queue of 32"].baseline is not None
    floor = metrics["delivered rate, bare handoff, queue.SimpleQueue (floor)"]
    assert floor.value > 0
    assert floor.baseline == rate.baseline


def test_bare_handoff_runs_each_event_in_order_on_its_thread_and_times_its_wait() -> None:
    ran: list[tuple[object, str]] = []
    bare = scheduler.BareHandoff(lambda event: ran.append((event, threading.current_thread().name)))
    events = [object() for _ in range(100)]
    try:
        for event in events:
            bare(event)  # type: ignore[arg-type]  # the handoff never looks into an event
    finally:
        bare.close()  # returns once every event put before has been handled

    assert ran == [(event, "bench-bare-handoff") for event in events]
    assert len(bare.delays) == len(events)
    assert min(bare.delays) >= 0


def test_busy_queues_compares_the_dispatch_cost_with_one_queue_waiting() -> None:
    metrics = _by_metric(
        scheduler.scheduler_busy_queues(Options(quick=True)), "scheduler_busy_queues"
    )

    one = metrics["per event, one queue waiting"]
    busy = metrics["per event, 200 queues waiting"]
    assert one.unit == busy.unit == "µs"
    assert one.value > 0
    assert busy.baseline == one.value


def test_assert_event_is_timed_against_a_raw_callback_waking_the_test() -> None:
    metrics = _by_metric(testing.assert_event_wake(rounds=5, repeats=1), "testing_assert_event")

    assert list(metrics) == [
        "reception to return p50 vs a raw callback waking the test",
        "reception to return p50 vs the same off Tango's thread",
        "reception to return p99 vs a raw callback waking the test",
        "reception to return p99 vs the same off Tango's thread",
    ]
    for measurement in metrics.values():
        assert measurement.unit == "µs"
        assert measurement.value > 0
        assert measurement.baseline is not None
        assert measurement.baseline > 0


def test_handoff_reports_the_schedulers_delay_next_to_raw_pytango() -> None:
    metrics = _by_metric(scheduler.handoff(seconds=0.3, repeats=1), "scheduler_handoff")

    assert list(metrics) == [
        "queueing delay p50 (stats)",
        "queueing delay p99 (stats)",
        "reception to callback p50",
        "reception to callback p99",
    ]
    for measurement in metrics.values():
        assert measurement.unit == "µs"
        assert measurement.baseline is not None
        assert measurement.value > 0


def test_subscribe_many_times_registrations_against_sync_read() -> None:
    metrics = _by_metric(scheduler.subscribe_many(servers=2, repeats=1), "scheduler_subscribe_200")

    total = metrics["total, 40 registrations at once"]
    assert total.unit == "s"
    assert total.value > 0
    assert total.baseline is not None
    assert metrics["total, 40 raw AsyncRead at once"].baseline == total.baseline
    assert metrics["total, 40 raw Async (no read) at once"].baseline == total.baseline


def test_flood_accounts_for_every_pushed_event() -> None:
    metrics = _by_metric(scheduler.flood(seconds=1.0), "scheduler_flood")

    difference = metrics["accounting difference"]
    assert difference.value == 0
    assert difference.baseline == 0
    pushed = metrics["pushed"].value
    assert pushed > 1000
    assert metrics["dropped by the queue"].value > 0
    # The stuck call, what the default queue kept, and at most one event that Tango's
    # thread was still handing over when the callback was released.
    assert metrics["delivered to the callback"].value <= DEFAULT_QUEUE_SIZE + 2


@contextmanager
def holding_tangos_thread(sandbox: TangoSandbox) -> Iterator[scheduler.StuckCallback]:
    """Hold this process's Tango event thread in a raw callback until the yielded callback
    is released (at the latest when the block ends), as a slow machine's thread falls behind:
    meanwhile every event to this process waits in ZeroMQ, or is dropped once it is full."""
    sandbox.add_device("BenchHold/1", "BenchPublisher", "bench/hold/1")
    sandbox.start_servers({"BenchHold/1": raw_pytango.DEVICES})
    proxy = sandbox.proxy("bench/hold/1")
    hold = scheduler.StuckCallback()
    with raw_pytango.subscribed(proxy, "counter", hold):
        try:
            hold.arm(0)
            proxy.command_inout("Mark", "counter")
            # An event pushed right after subscribing can be lost while ZeroMQ connects.
            raw_pytango.catch_up(proxy, "counter")
            wait_until(lambda: hold.calls == 1, WAIT_SECONDS, "Tango's thread holding")
            yield hold
        finally:
            hold.release()
    del proxy  # before the server stops


def test_a_stuck_callback_gets_only_what_its_queue_kept_however_far_behind_tango_was() -> None:
    with TangoSandbox() as sandbox:
        ticker = raw_pytango.start_bench_device(sandbox, "BenchTicker/behind", "BenchTicker")
        watcher: Any = sandbox.proxy("bench/ticker/1")
        first = watcher.read_attribute("fast").value
        stuck = scheduler.StuckCallback()
        with (
            CallbackScheduler(name="test-behind") as sched,
            scheduler.registered(sched, ticker, "fast", stuck) as callback_id,
            ThreadPoolExecutor(1) as pool,
            holding_tangos_thread(sandbox) as hold,
        ):
            flood = pool.submit(scheduler.flood_once, ticker, stuck, 1.0, on_tango_thread=False)
            # The whole flood waits in ZeroMQ; Tango's thread resumes once it has ended.
            wait_until(
                lambda: (
                    watcher.read_attribute("fast").value > first
                    and not watcher.read_attribute("pumping").value
                ),
                WAIT_SECONDS,
                "the flood ending",
            )
            hold.release()
            run = flood.result(WAIT_SECONDS)
            dropped = scheduler.queue_stats(sched, callback_id).dropped
        del ticker  # before the server stops

    assert run["pushed"] > 1000
    assert run["delivered"] <= DEFAULT_QUEUE_SIZE + 2
    assert scheduler.account(run, dropped)["difference"] == 0


def test_a_burst_is_counted_to_its_last_event_however_late_that_arrives() -> None:
    burst = 100_000  # more than ZeroMQ holds for a process that takes nothing in
    with TangoSandbox() as sandbox:
        publisher = raw_pytango.start_bench_device(sandbox, "BenchPublisher/late", "BenchPublisher")
        watcher: Any = sandbox.proxy("bench/publisher/1")
        counter = raw_pytango.BurstCounter()
        with (
            raw_pytango.subscribed(publisher, "counter", counter),
            ThreadPoolExecutor(1) as pool,
            holding_tangos_thread(sandbox) as hold,
        ):
            result = pool.submit(raw_pytango.burst_once, publisher, counter, burst)
            # No event reaches the callback until it gives up on the burst, or pushes a
            # mark because nothing arrives.
            wait_until(
                lambda: result.done() or watcher.read_attribute("counter").value > burst,
                WAIT_SECONDS,
                "a mark or the end of the measurement",
            )
            hold.release()
            run = result.result(WAIT_SECONDS)
            last = watcher.read_attribute("counter").value
        del publisher  # before the server stops

    assert counter.latest == last > burst, "the dropped tail was replaced by a mark"
    assert run["rate"] > 0
    assert 0 < counter.delivered == burst - run["lost"] < burst


def test_monitor_findings_times_the_findings_of_a_healthy_system() -> None:
    """`cpu_per_poll` raises if the system it is given has a finding."""
    reports = findings.system_reports(3, polls=4)

    assert findings.cpu_per_poll(reports) > 0
    assert all(entry.report is not None for entry in reports[-1].entries)


@pytest.mark.parametrize("samples", [False, True], ids=["counters only", "with samples"])
def test_exporter_times_the_exporter_of_a_healthy_system(samples: bool) -> None:
    """`exporter_polls` raises if the system it is given has a finding."""
    result = exporter.exporter_polls(3, polls=exporter.SCRAPE_EVERY, samples=samples)

    assert result["cpu"] > 0
    assert all(result[stage] >= 0 for stage in exporter.STAGES)
    assert result[exporter.FLOOR] > 0
    assert result["scrape"] > 0
    assert result["bytes"] > 0


def test_exporter_modes_are_without_and_with_perf_samples() -> None:
    """The counters-only mode reads replies as a server gives them with perf monitoring
    off; the other mode's replies carry samples, so its page has the histograms."""
    server = findings.monitored_servers(2)[0]
    snapshots = [
        Reply.answered(server, exporter.reply_text(0, 2, 1, samples)).snapshot
        for samples in (False, True)
    ]

    assert [snapshot and snapshot.perf_monitoring for snapshot in snapshots] == [False, True]
    small, large = (
        exporter.exporter_polls(2, exporter.SCRAPE_EVERY, samples)["bytes"]
        for samples in (False, True)
    )
    assert small < large


def test_monitor_snapshot_times_one_and_all_servers() -> None:
    with TangoSandbox() as sandbox:
        devices = monitor.start_monitored_servers(sandbox, 2)
        servers = resolve_servers([sandbox.trl(device) for device in devices])
        result = monitor.measure_once(servers, polls=2)

    assert set(result) == {"single", "concurrent", "sequential", "cpu"}
    assert all(seconds > 0 for seconds in result.values())


def test_monitor_snapshot_of_busy_servers_waits_for_each() -> None:
    with TangoSandbox() as sandbox:
        devices = monitor.start_monitored_servers(sandbox, 2)
        servers = resolve_servers([sandbox.trl(device) for device in devices])
        busy = monitor.busy_devices(sandbox, servers)
        result = monitor.measure_busy_once(servers, busy, polls=2)
        del busy  # before the servers stop

    # Floors set by the servers' busy time, which a slower machine only raises.  Whether
    # the concurrent poll beats the sequential one depends on the machine: the benchmark
    # reports it, the monitor's own tests check that one server does not hold up another.
    assert set(result) == {"busy single", "busy concurrent", "busy sequential"}
    assert result["busy single"] >= monitor.BUSY_SECONDS
    assert result["busy concurrent"] >= monitor.BUSY_SECONDS
    assert result["busy sequential"] >= 2 * monitor.BUSY_SECONDS


def test_report_times_the_report_of_a_recording_with_its_troubles() -> None:
    """`recorded` raises if the monitor does not find each trouble in the recording, and
    `measure_once` if the report warns about a line of it."""
    with report.recorded(report.MINIMUM_POLLS, report.Mode(per_poll=1, samples=True)) as path:
        lines = path.read_text().splitlines()
        result = report.measure_once(path)
    assert path.parent.exists() is False

    assert len(lines) == report.MINIMUM_POLLS
    kinds = {finding["kind"] for line in lines for finding in json.loads(line)["findings"]}
    assert kinds >= report.EXPECTED
    assert set(result) == {"wall", "cpu", "bytes", "timeline", "json", "read", "analysis"}
    assert all(value > 0 for value in result.values())


def test_report_refuses_a_recording_too_short_for_its_troubles() -> None:
    with pytest.raises(ValueError, match=f"needs {report.MINIMUM_POLLS}"):
        report.Troubles.of(report.MINIMUM_POLLS - 1)


# -- tiny real runs of the asyncio benchmarks ---------------------------------------------


def test_async_fairness_times_the_measured_stream_on_both_sides() -> None:
    result = async_scheduler.fairness(window=2.0, repeats=1)

    assert set(result) == {"green", "milonga"}
    for run in result.values():
        assert 0 <= run["latency median"] <= run["latency p99"] <= run["latency max"]
        assert 0 <= run["handoff p50"] <= run["handoff p99"]


def test_async_noop_rate_delivers_every_variant_s_burst() -> None:
    rates = async_scheduler.asyncio_noop_rates(burst=2000, repeats=1)

    assert set(rates) == {"raw", "call_soon", "green", "milonga", "threads"}
    for run in rates.values():
        assert run["rate"] > 0
        assert 0 <= run["lost"] < 2000


def test_async_handoff_times_the_floor_raw_green_mode_and_the_scheduler() -> None:
    result = async_scheduler.asyncio_handoffs(seconds=0.5, repeats=1)

    assert set(result) == {"call_soon", "green", "milonga"}
    for run in result.values():
        assert 0 < run["p50"] <= run["p99"]
    assert 0 < result["milonga"]["handoff p50"] <= result["milonga"]["handoff p99"]
