"""EventQueue: bounded FIFO that drops its oldest entry and accounts for every entry."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue, QueueSizeError


def test_full_queue_drops_the_oldest_entry() -> None:
    queue: EventQueue[str] = EventQueue(size=2)

    assert not queue.put("a")
    assert not queue.put("b")
    assert queue.put("c")

    assert [queue.take(), queue.take()] == ["b", "c"]
    assert (queue.processed, queue.dropped) == (2, 1)


def test_amending_the_newest_entry_replaces_it_and_counts_nothing() -> None:
    queue: EventQueue[str] = EventQueue(size=2)
    assert not queue.amend_newest(lambda entry: entry + "!")
    queue.put("a")
    queue.put("b")

    assert not queue.amend_newest(lambda entry: None)
    assert queue.amend_newest(lambda entry: entry + "+c")

    assert [queue.take(), queue.take()] == ["a", "b+c"]
    assert (queue.processed, queue.dropped) == (2, 0)


def test_default_size_is_small() -> None:
    assert 10 <= EventQueue[int]().size == DEFAULT_QUEUE_SIZE <= 100


@pytest.mark.parametrize("size", [0, -3])
def test_size_that_cannot_hold_an_event_is_refused(size: int) -> None:
    with pytest.raises(QueueSizeError, match="queue_size must be at least 1"):
        EventQueue[int](size=size)


@pytest.mark.parametrize(
    ("size", "given"),
    [(2.5, r"2.5 \(float\)"), ("3", r"'3' \(str\)"), (True, "True"), (None, "None")],
)
def test_size_that_is_not_a_whole_number_is_refused(size: object, given: str) -> None:
    with pytest.raises(TypeError, match=f"queue_size must be a whole number .*got {given}"):
        EventQueue[int](size=size)  # type: ignore[arg-type]


@given(
    size=st.integers(min_value=1, max_value=8),
    operations=st.lists(st.one_of(st.integers(), st.none()), max_size=60),
)
def test_behaves_like_a_bounded_deque_and_loses_no_count(
    size: int, operations: list[int | None]
) -> None:
    """Integers are puts, None is a take (when not empty)."""
    queue: EventQueue[int] = EventQueue(size=size)
    model: deque[int] = deque(maxlen=size)
    puts = 0
    for operation in operations:
        if operation is None:
            if model:
                assert queue.take() == model.popleft()
        else:
            puts += 1
            assert queue.put(operation) == (len(model) == size)
            model.append(operation)
        assert len(queue) == len(model) <= size
    assert queue.processed + queue.dropped + len(queue) == puts
    waiting = len(queue)
    assert queue.clear() == waiting
    assert queue.processed + queue.dropped == puts
