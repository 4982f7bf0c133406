"""Dispatcher: fair, one entry at a time, one worker per queue, clean close."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.dispatch import Dispatcher
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
        st.one_of(
            st.tuples(st.just("put"), st.integers(0, 2)),
            st.tuples(st.just("take"), st.just(0)),
            st.tuples(st.just("done"), st.integers(0, 3)),
        ),
        max_size=80,
    )
)
def test_each_queue_runs_in_order_and_never_twice_at_once(
    script: list[tuple[str, int]],
) -> None:
    clock = FakeClock()
    dispatcher: Dispatcher[Entry] = Dispatcher(clock=clock)
    queues: list[EventQueue[Entry]] = [EventQueue(size=1000) for _ in range(3)]
    put_order: list[list[str]] = [[], [], []]
    ran: list[list[str]] = [[], [], []]
    running: list[EventQueue[Entry]] = []
    for count, (action, argument) in enumerate(script):
        clock.now += 0.01
        if action == "put":
            name = f"{argument}-{count}"
            put_order[argument].append(name)
            dispatcher.put(queues[argument], Entry(name, clock.now))
        elif action == "take" and any(len(q) and q not in running for q in queues):
            queue, entry = _take(dispatcher)
            assert queue not in running
            running.append(queue)
            ran[queues.index(queue)].append(entry.name)
        elif action == "done" and running:
            dispatcher.done(running.pop(argument % len(running)), 0.0, 0.01)
    for index in range(3):
        assert ran[index] == put_order[index][: len(ran[index])]
