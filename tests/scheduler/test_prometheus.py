"""SchedulerCollector: a scheduler's queues in the Prometheus text format, against real
servers, checked against `CallbackScheduler.stats`."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
import tango
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from milonga import CallbackScheduler
from milonga.prometheus import SchedulerCollector
from milonga.scheduler import SchedulerStats
from milonga.testing import wait_until
from tests.scheduler.helpers import ARCHIVE, CHANGE, WAIT_SECONDS, Recorder

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample ``registry`` exports, parsed back from the text format."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def steady_scrape(
    registry: CollectorRegistry, schedulers: list[CallbackScheduler]
) -> tuple[Samples, list[SchedulerStats]]:
    """A scrape, and the statistics of ``schedulers`` that held while it was taken: a
    worker may still be recording the timing of an event just handled, and events may
    still arrive."""
    found: list[tuple[Samples, list[SchedulerStats]]] = []

    def steady() -> bool:
        before = [scheduler.stats() for scheduler in schedulers]
        samples = scheduler_samples(scrape(registry))
        found[:] = [(samples, before)]
        return before == [scheduler.stats() for scheduler in schedulers]

    wait_until(steady, "a scrape while the scheduler's statistics hold still", WAIT_SECONDS)
    return found[0]


def expected(name: str, stats: SchedulerStats) -> Samples:
    """The samples a collector of one scheduler called ``name`` must export for ``stats``."""
    samples: Samples = {}
    for queue in stats.queues:
        labels = (("scheduler", name), ("queue", queue.streams[0]))
        values: list[tuple[str, float | None, tuple[tuple[str, str], ...]]] = [
            ("milonga_scheduler_queue_depth", queue.depth, ()),
            ("milonga_scheduler_queue_size", queue.size, ()),
            ("milonga_scheduler_queue_streams", len(queue.streams), ()),
            ("milonga_scheduler_processed_total", queue.processed, ()),
            ("milonga_scheduler_dropped_total", queue.dropped, ()),
        ]
        for percentile, callback, delay in (
            ("50", queue.callback_p50, queue.queueing_delay_p50),
            ("99", queue.callback_p99, queue.queueing_delay_p99),
        ):
            values.append(
                ("milonga_scheduler_callback_seconds", callback, (("percentile", percentile),))
            )
            values.append(
                ("milonga_scheduler_queueing_delay_seconds", delay, (("percentile", percentile),))
            )
        for metric, value, extra in values:
            if value is not None:
                samples[(metric, frozenset(labels + extra))] = float(value)
    return samples


def scheduler_samples(samples: Samples) -> Samples:
    """The samples of the scheduler families only (a registry may add its own)."""
    return {key: value for key, value in samples.items() if key[0].startswith("milonga_scheduler")}


def registry_of(collector: SchedulerCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)  # as prometheus_client's REGISTRY
    registry.register(collector)
    return registry


def test_each_queue_exports_what_stats_says(scheduler: CallbackScheduler, counter: str) -> None:
    recorder = Recorder()
    scheduler.register_event_callback(counter, "value", CHANGE, recorder).result(WAIT_SECONDS)
    proxy = tango.DeviceProxy(counter)

    def four_events() -> bool:
        # A new subscription can lose what is pushed in its first milliseconds: push on.
        proxy.Increment()
        return len(recorder.events) >= 4

    wait_until(four_events, "four events handled", WAIT_SECONDS)
    registry = registry_of(SchedulerCollector(scheduler, name="main"))

    samples, (stats,) = steady_scrape(registry, [scheduler])

    assert samples == expected("main", stats)
    assert samples[("milonga_scheduler_processed_total", _queue("main", counter))] >= 4
    assert ("milonga_scheduler_callback_seconds", _queue("main", counter, "99")) in samples


def test_a_slow_callback_on_a_bounded_queue_shows_dropped_events(
    scheduler: CallbackScheduler, counter: str
) -> None:
    release = threading.Event()

    def stuck(_: tango.EventData) -> None:
        release.wait(WAIT_SECONDS)

    scheduler.register_event_callback(
        counter,
        "value",
        CHANGE,
        stuck,
        queue_factory=lambda: scheduler.allocate_queue(queue_size=2),
    ).result(WAIT_SECONDS)
    registry = registry_of(SchedulerCollector(scheduler))
    try:
        wait_until(lambda: scheduler.stats().processed == 1, "the worker to take the first event")
        proxy = tango.DeviceProxy(counter)

        def overflowing() -> bool:
            # The worker is stuck on the first event: two more wait, the rest are dropped.
            # A new subscription can lose what is pushed in its first milliseconds: push on.
            proxy.Increment()
            return scheduler.stats().dropped >= 3

        wait_until(overflowing, "three events dropped", WAIT_SECONDS)
        samples, (stats,) = steady_scrape(registry, [scheduler])
    finally:
        release.set()

    assert samples == expected("default", stats)
    labels = _queue("default", counter)
    assert samples[("milonga_scheduler_dropped_total", labels)] >= 3
    assert samples[("milonga_scheduler_queue_depth", labels)] == 2
    assert samples[("milonga_scheduler_queue_size", labels)] == 2


def test_a_shared_queue_is_named_after_its_first_stream(
    scheduler: CallbackScheduler, counter: str
) -> None:
    change, archive = Recorder(), Recorder()
    scheduler.register_event_callback(counter, "value", CHANGE, change).result(WAIT_SECONDS)
    scheduler.register_event_callback(
        counter,
        "value",
        ARCHIVE,
        archive,
        queue_factory=lambda: scheduler.get_queue(counter, "value", CHANGE),
    ).result(WAIT_SECONDS)
    change.wait_for_last(5)
    archive.wait_for_last(5)

    registry = registry_of(SchedulerCollector(scheduler))

    samples, (stats,) = steady_scrape(registry, [scheduler])

    assert samples == expected("default", stats)
    assert samples[("milonga_scheduler_queue_streams", _queue("default", counter))] == 2


def test_one_collector_exports_two_schedulers_apart(
    scheduler: CallbackScheduler, counter: str
) -> None:
    with CallbackScheduler(name="second") as second:
        first_events, second_events = Recorder(), Recorder()
        scheduler.register_event_callback(counter, "value", CHANGE, first_events)
        second.register_event_callback(counter, "value", CHANGE, second_events)
        first_events.wait_for_last(5)
        second_events.wait_for_last(5)
        collector = SchedulerCollector(scheduler, name="a")
        collector.add(second, name="b")

        samples, (first, other) = steady_scrape(registry_of(collector), [scheduler, second])

        assert samples == {**expected("a", first), **expected("b", other)}
        assert ("milonga_scheduler_processed_total", _queue("b", counter)) in samples


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed; install Debian's prometheus package (apt-get install "
    "prometheus), as .ci/run does",
)
def test_promtool_finds_nothing_to_lint(scheduler: CallbackScheduler, counter: str) -> None:
    recorder = Recorder()
    scheduler.register_event_callback(counter, "value", CHANGE, recorder)
    recorder.wait_for_last(5)
    text = generate_latest(registry_of(SchedulerCollector(scheduler)))

    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, check=False
    )

    assert b"milonga_scheduler_callback_seconds" in text
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, b"", b"")


def test_a_scheduler_shut_down_exports_no_queue(counter: str) -> None:
    recorder = Recorder()
    with CallbackScheduler(name="ending") as ending:
        ending.register_event_callback(counter, "value", CHANGE, recorder)
        recorder.wait_for_last(5)
        registry = registry_of(SchedulerCollector(ending))
        assert scheduler_samples(scrape(registry))

    assert scheduler_samples(scrape(registry)) == {}


def test_bad_arguments_are_refused_clearly(scheduler: CallbackScheduler) -> None:
    collector = SchedulerCollector(scheduler)
    with CallbackScheduler(name="other") as other:
        with pytest.raises(ValueError, match=r"scheduler test-sched is exported already"):
            collector.add(scheduler, name="again")
        with pytest.raises(ValueError, match=r"a scheduler named 'default' is exported already"):
            collector.add(other, name="default")
        with pytest.raises(ValueError, match=r"must be a non-empty string, got ''"):
            collector.add(other, name="")
    with pytest.raises(TypeError, match=r"must be a milonga CallbackScheduler, got str"):
        SchedulerCollector("test-sched")  # type: ignore[arg-type]


def _queue(name: str, trl: str, percentile: str | None = None) -> frozenset[tuple[str, str]]:
    """The labels of the queue of ``trl``'s change stream in the scheduler ``name``."""
    labels = {("scheduler", name), ("queue", f"{trl}/value.change")}
    if percentile is not None:
        labels.add(("percentile", percentile))
    return frozenset(labels)
