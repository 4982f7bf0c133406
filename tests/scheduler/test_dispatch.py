"""Dispatcher: fair, one entry at a time, one worker per queue, clean close."""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.dispatch import Dispatcher
from milonga.scheduler.fairness import WorkerUsage
from milonga.scheduler.queues import EventQueue


@dataclass(frozen=True)
class Entry:
    name: str
    enqueued_at: float


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _take(dispatcher: Dispatcher[Entry]) -> tuple[EventQueue[Entry], Entry]:
    job = dispatcher.next()
    assert job is not None
    return job


def _take_within(dispatcher: Dispatcher[Entry], seconds: float) -> tuple[EventQueue[Entry], Entry]:
    """`_take` on another thread, failing if nothing is ready within ``seconds``."""
    jobs: list[tuple[EventQueue[Entry], Entry]] = []
    worker = threading.Thread(target=lambda: jobs.append(_take(dispatcher)))
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        dispatcher.close()  # lets the worker go
        worker.join()
    assert jobs, f"no entry was ready within {seconds} s"
    return jobs[0]


def test_a_quiet_stream_overtakes_a_slow_stream_backlog() -> None:
    clock = FakeClock()
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=clock)
    slow: EventQueue[Entry] = EventQueue(size=100)
    quiet: EventQueue[Entry] = EventQueue()
    for index in range(10):
        dispatcher.put(slow, Entry(f"slow{index}", clock.now))

    queue, _ = _take(dispatcher)
    dispatcher.put(quiet, Entry("quiet", clock.now))
    clock.now += 0.3
    dispatcher.done(queue, 0.0, 0.3)

    assert _take(dispatcher)[1].name == "quiet"


def test_among_equals_the_oldest_entry_goes_first() -> None:
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=FakeClock())
    first: EventQueue[Entry] = EventQueue()
    second: EventQueue[Entry] = EventQueue()
    dispatcher.put(second, Entry("older", 1.0))
    dispatcher.put(first, Entry("newer", 2.0))

    assert _take(dispatcher)[1].name == "older"


def test_a_busy_queue_is_not_handed_to_a_second_worker() -> None:
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=FakeClock())
    only: EventQueue[Entry] = EventQueue()
    other: EventQueue[Entry] = EventQueue()
    dispatcher.put(only, Entry("a", 0.0))
    dispatcher.put(only, Entry("b", 0.0))
    dispatcher.put(other, Entry("c", 0.0))

    first_queue, _ = _take(dispatcher)
    second_queue, _ = _take(dispatcher)

    assert first_queue is only
    assert second_queue is other


def test_discard_drops_waiting_entries() -> None:
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=FakeClock())
    queue: EventQueue[Entry] = EventQueue()
    dispatcher.put(queue, Entry("a", 0.0))
    dispatcher.put(queue, Entry("b", 0.0))

    assert dispatcher.discard(queue) == 2
    dispatcher.close()
    assert dispatcher.next() is None


def test_a_refilled_queue_is_ranked_by_its_use_since_the_discard() -> None:
    clock = FakeClock()
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=clock)
    refilled: EventQueue[Entry] = EventQueue()
    other: EventQueue[Entry] = EventQueue()
    _run(dispatcher, clock, other, 0.1)
    _run(dispatcher, clock, refilled, 0.01)
    dispatcher.put(refilled, Entry("discarded", clock.now))
    dispatcher.discard(refilled)
    dispatcher.put(refilled, Entry("refill", clock.now))
    dispatcher.put(refilled, Entry("after a long run", clock.now))
    dispatcher.put(other, Entry("other", clock.now))

    queue, entry = _take(dispatcher)
    assert entry.name == "refill"
    dispatcher.done(queue, 0.0, 1.0)

    assert _take(dispatcher)[1].name == "other"


def _run(
    dispatcher: Dispatcher[Entry], clock: FakeClock, queue: EventQueue[Entry], ran: float
) -> None:
    """Put one entry in ``queue``, take it and report that it ran for ``ran`` seconds."""
    dispatcher.put(queue, Entry("run", clock.now))
    taken, _ = _take(dispatcher)
    assert taken is queue
    clock.now += ran
    dispatcher.done(queue, 0.0, ran)


@given(
    run_times=st.lists(st.floats(0, 0.5), min_size=2, max_size=8),
    order=st.randoms(use_true_random=False),
)
def test_ready_queues_are_served_least_used_first(
    run_times: list[float], order: random.Random
) -> None:
    clock = FakeClock()
    usage: WorkerUsage[EventQueue[Entry]] = WorkerUsage()
    dispatcher: Dispatcher[Entry] = Dispatcher(usage=usage, clock=clock)
    queues: list[EventQueue[Entry]] = [EventQueue() for _ in run_times]
    for queue, ran in zip(queues, run_times, strict=True):
        _run(dispatcher, clock, queue, ran)
    order.shuffle(queues)
    for queue in queues:
        dispatcher.put(queue, Entry("waiting", clock.now))

    served = [usage.usage(_take(dispatcher)[0], clock.now) for _ in queues]

    for less_used, more_used in itertools.pairwise(served):
        assert less_used <= more_used or less_used == pytest.approx(more_used, rel=1e-9)


def test_a_queue_discarded_while_its_entry_runs_is_forgotten_for_good() -> None:
    clock = FakeClock()
    usage: WorkerUsage[EventQueue[Entry]] = WorkerUsage()
    dispatcher: Dispatcher[Entry] = Dispatcher(usage=usage, clock=clock)
    gone: EventQueue[Entry] = EventQueue()
    dispatcher.put(gone, Entry("running", 0.0))
    dispatcher.put(gone, Entry("waiting", 0.0))
    _take(dispatcher)

    assert dispatcher.discard(gone) == 1
    dispatcher.done(gone, 0.0, 0.5)

    assert dispatcher.timing(gone).durations == deque()
    assert usage.usage(gone, clock.now) == 0.0


def test_a_discarded_queue_put_to_again_while_running_is_served_again() -> None:
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=FakeClock())
    reused: EventQueue[Entry] = EventQueue()
    dispatcher.put(reused, Entry("running", 0.0))
    _take(dispatcher)
    dispatcher.discard(reused)
    dispatcher.put(reused, Entry("after the discard", 0.0))

    dispatcher.done(reused, 0.0, 0.1)

    assert _take_within(dispatcher, 60.0)[1].name == "after the discard"
    assert list(dispatcher.timing(reused).durations) == [0.1]


def test_close_wakes_a_waiting_worker() -> None:
    dispatcher: Dispatcher[Entry] = Dispatcher()
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(dispatcher.next()))
    worker.start()

    dispatcher.close()
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert results == [None]


@given(
    script=st.lists(
        st.tuples(st.sampled_from(["put", "put", "take", "done", "discard"]), st.integers(0, 2)),
        max_size=80,
    ),
    run_times=st.lists(st.floats(0, 0.5), min_size=1, max_size=5),
)
def test_each_queue_runs_in_order_never_twice_at_once_and_least_used_first(
    script: list[tuple[str, int]], run_times: list[float]
) -> None:
    clock = FakeClock()
    usage: WorkerUsage[EventQueue[Entry]] = WorkerUsage()
    dispatcher: Dispatcher[Entry] = Dispatcher(usage=usage, clock=clock)
    queues: list[EventQueue[Entry]] = [EventQueue(size=1000) for _ in range(3)]
    waiting: list[list[str]] = [[], [], []]
    running: list[EventQueue[Entry]] = []
    for count, (action, argument) in enumerate(script):
        clock.now += 0.01
        if action == "put":
            name = f"{argument}-{count}"
            waiting[argument].append(name)
            dispatcher.put(queues[argument], Entry(name, clock.now))
        elif action == "take" and any(len(q) and q not in running for q in queues):
            ready = [q for q in queues if len(q) and q not in running]
            least = min(usage.usage(q, clock.now) for q in ready)
            queue, entry = _take(dispatcher)
            assert queue not in running
            assert usage.usage(queue, clock.now) == pytest.approx(least, rel=1e-9)
            running.append(queue)
            assert entry.name == waiting[queues.index(queue)].pop(0)
        elif action == "done" and running:
            ran = run_times[count % len(run_times)]
            dispatcher.done(running.pop(argument % len(running)), 0.0, ran)
        elif action == "discard" and queues[argument] not in running:
            dispatcher.discard(queues[argument])
            waiting[argument].clear()
