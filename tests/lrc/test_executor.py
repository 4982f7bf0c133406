"""CommandExecutor without Tango: order of updates, bounds, abort and shutdown."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from milonga.lrc import CommandExecutor, ProgressReporter, ResultCode, TaskStatus

WAIT_SECONDS = 10.0


class Published:
    """Collects what the executor publishes, in order."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()

    def __call__(self, command_id: str, changes: Mapping[str, Any]) -> None:
        with self._changed:
            self.updates.append((command_id, dict(changes)))
            self._changed.notify_all()

    def of(self, command_id: str) -> list[dict[str, Any]]:
        return [changes for cid, changes in self.updates if cid == command_id]

    def wait_for_status(self, command_id: str, status: TaskStatus) -> None:
        with self._changed:
            assert self._changed.wait_for(
                lambda: (
                    {"status": status} in [{"status": c.get("status")} for c in self.of(command_id)]
                ),
                WAIT_SECONDS,
            ), f"{command_id} never reached {status.name}; updates: {self.updates}"


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def executor(published: Published) -> Iterator[CommandExecutor]:
    executor = CommandExecutor(published, max_queued=2, name="test-lrc")
    yield executor
    executor.shutdown()


def blocking(started: threading.Event) -> Any:
    def work(progress: ProgressReporter, abort_event: threading.Event) -> str:
        started.set()
        abort_event.wait(WAIT_SECONDS)
        return "stopped"

    return work


def test_updates_come_in_order_and_the_result_with_the_final_status(
    executor: CommandExecutor, published: Published
) -> None:
    def work(progress: ProgressReporter, abort_event: threading.Event) -> dict[str, int]:
        progress(50)
        progress(100)
        return {"answer": 42}

    code, command_id = executor.submit("Work", work)

    assert code is ResultCode.QUEUED
    published.wait_for_status(command_id, TaskStatus.COMPLETED)
    assert published.of(command_id) == [
        {"status": TaskStatus.QUEUED},
        {"status": TaskStatus.IN_PROGRESS},
        {"progress": 50},
        {"progress": 100},
        {"status": TaskStatus.COMPLETED, "result": {"answer": 42}},
    ]
    finished = executor.records()[2]
    assert [(r.command_id, r.status, r.progress) for r in finished] == [
        (command_id, TaskStatus.COMPLETED, 100)
    ]


def test_an_exception_fails_the_command_with_the_error_as_result(
    executor: CommandExecutor, published: Published, caplog: pytest.LogCaptureFixture
) -> None:
    def work(progress: ProgressReporter, abort_event: threading.Event) -> None:
        raise OSError("no route to motor")

    _, command_id = executor.submit("Move", work)

    published.wait_for_status(command_id, TaskStatus.FAILED)
    assert published.of(command_id)[-1]["result"] == [
        ResultCode.FAILED,
        "OSError: no route to motor",
    ]
    assert f"long running command Move ({command_id}) failed" in caplog.text


@pytest.mark.parametrize("escape", [SystemExit, KeyboardInterrupt, asyncio.CancelledError])
def test_an_exception_that_is_not_an_exception_fails_the_command_and_the_next_one_runs(
    executor: CommandExecutor,
    published: Published,
    caplog: pytest.LogCaptureFixture,
    escape: type[BaseException],
) -> None:
    def work(progress: ProgressReporter, abort_event: threading.Event) -> None:
        raise escape("leaving")

    _, escaping = executor.submit("Escape", work)
    _, following = executor.submit("Next", lambda progress, abort: "ran")

    published.wait_for_status(escaping, TaskStatus.FAILED)
    published.wait_for_status(following, TaskStatus.COMPLETED)
    assert published.of(escaping)[-1]["result"] == [
        ResultCode.FAILED,
        f"{escape.__name__}: leaving",
    ]
    assert f"long running command Escape ({escaping}) failed" in caplog.text
    _, abort_id = executor.abort()
    published.wait_for_status(abort_id, TaskStatus.COMPLETED)


def test_an_exception_without_a_message_is_named_alone(
    executor: CommandExecutor, published: Published
) -> None:
    def work(progress: ProgressReporter, abort_event: threading.Event) -> None:
        raise SystemExit

    _, command_id = executor.submit("Exit", work)

    published.wait_for_status(command_id, TaskStatus.FAILED)
    assert published.of(command_id)[-1]["result"] == [ResultCode.FAILED, "SystemExit"]


def test_a_publish_raising_system_exit_stops_no_later_update(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published = Published()

    def publish(command_id: str, changes: Mapping[str, Any]) -> None:
        published(command_id, changes)
        if changes.get("status") is TaskStatus.QUEUED:
            raise SystemExit("the device's push gave up")

    executor = CommandExecutor(publish, name="exiting-lrc")
    try:
        _, command_id = executor.submit("Work", lambda progress, abort: None)
        published.wait_for_status(command_id, TaskStatus.COMPLETED)
    finally:
        executor.shutdown()
    assert "could not publish the update" in caplog.text


def test_a_result_that_is_not_json_fails_saying_what_to_return(
    executor: CommandExecutor, published: Published
) -> None:
    _, command_id = executor.submit("Odd", lambda progress, abort: object())

    published.wait_for_status(command_id, TaskStatus.FAILED)
    assert "not JSON-serialisable" in published.of(command_id)[-1]["result"][1]


def test_a_full_queue_rejects_with_a_reason_and_abort_empties_it(
    executor: CommandExecutor, published: Published
) -> None:
    started = threading.Event()
    _, running = executor.submit("Block", blocking(started))
    assert started.wait(WAIT_SECONDS)
    waiting = [executor.submit("Wait", blocking(threading.Event()))[1] for _ in range(2)]

    code, reason = executor.submit("Extra", blocking(threading.Event()))

    assert code is ResultCode.REJECTED
    assert "2 commands already wait" in reason
    assert "Abort" in reason
    code, abort_id = executor.abort()
    assert code is ResultCode.STARTED
    for command_id in (running, *waiting):
        published.wait_for_status(command_id, TaskStatus.ABORTED)
    published.wait_for_status(abort_id, TaskStatus.COMPLETED)
    assert published.of(waiting[0]) == [
        {"status": TaskStatus.QUEUED},
        {"status": TaskStatus.ABORTED, "result": [ResultCode.ABORTED, "Wait was aborted"]},
    ]
    # The abort completes only after the running command has ended.
    order = [cid for cid, changes in published.updates if changes.get("status") in
             (TaskStatus.ABORTED, TaskStatus.COMPLETED)]  # fmt: skip
    assert order.index(running) < order.index(abort_id)


def test_abort_with_nothing_running_completes_at_once(
    executor: CommandExecutor, published: Published
) -> None:
    _, abort_id = executor.abort()
    published.wait_for_status(abort_id, TaskStatus.COMPLETED)


def test_shutdown_aborts_joins_both_threads_and_then_rejects(published: Published) -> None:
    executor = CommandExecutor(published, name="shutdown-lrc")
    started = threading.Event()
    _, running = executor.submit("Block", blocking(started))
    assert started.wait(WAIT_SECONDS)

    executor.shutdown()
    executor.shutdown()

    assert not [t for t in threading.enumerate() if t.name.startswith("shutdown-lrc")]
    assert published.of(running)[-1]["status"] is TaskStatus.ABORTED
    for code, reason in (executor.submit("Late", blocking(threading.Event())), executor.abort()):
        assert code is ResultCode.REJECTED
        assert "shutting down" in reason


def test_a_failing_publish_is_logged_and_later_updates_still_go_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def publish(command_id: str, changes: Mapping[str, Any]) -> None:
        seen.append(dict(changes))
        if changes.get("status") is TaskStatus.COMPLETED:
            done.set()
        if changes.get("status") is TaskStatus.QUEUED:
            raise RuntimeError("push failed")

    executor = CommandExecutor(publish, name="flaky-lrc")
    try:
        with caplog.at_level(logging.ERROR, "milonga.lrc"):
            executor.submit("Work", lambda progress, abort: None)
            assert done.wait(WAIT_SECONDS)
    finally:
        executor.shutdown()
    assert "could not publish the update" in caplog.text
    assert len(seen) == 3


def test_max_queued_must_be_positive(published: Published) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CommandExecutor(published, max_queued=0)


def test_an_abort_waiting_for_the_running_command_is_listed_as_executing(
    executor: CommandExecutor, published: Published
) -> None:
    started, release = threading.Event(), threading.Event()

    def stubborn(progress: ProgressReporter, abort_event: threading.Event) -> None:
        started.set()
        release.wait(WAIT_SECONDS)  # ignores the abort until released

    _, running = executor.submit("Stubborn", stubborn)
    assert started.wait(WAIT_SECONDS)
    _, abort = executor.abort()

    executing = [record.command_id for record in executor.records()[1]]
    release.set()
    published.wait_for_status(abort, TaskStatus.COMPLETED)

    assert executing == [running, abort]


def test_the_lists_describe_commands_as_the_field_does(
    executor: CommandExecutor, published: Published
) -> None:
    started = threading.Event()
    _, running = executor.submit("Block", blocking(started))
    assert started.wait(WAIT_SECONDS)
    _, waiting = executor.submit("Wait", blocking(threading.Event()))

    queued, executing, _ = (
        [json.loads(record.summary()) for record in records] for records in executor.records()
    )
    executor.abort()
    published.wait_for_status(running, TaskStatus.ABORTED)
    finished = [json.loads(record.summary()) for record in executor.records()[2]]

    assert [(q["uid"], sorted(q)) for q in queued] == [(waiting, ["name", "submitted_time", "uid"])]
    assert [(e["uid"], sorted(e)) for e in executing] == [
        (running, ["name", "started_time", "submitted_time", "uid"])
    ]
    by_uid = {f["uid"]: f for f in finished}
    assert by_uid[running]["status"] == "ABORTED"
    assert by_uid[running]["result"] == [ResultCode.ABORTED, "Block was aborted"]
    for key in ("submitted_time", "started_time", "finished_time"):  # ISO 8601, in UTC
        moment = datetime.datetime.fromisoformat(by_uid[running][key])
        assert moment.utcoffset() == datetime.timedelta(0)
