"""The device side's engine: a bounded queue of long running commands and the threads
that run them and publish what happens to them.

Tango-free apart from `tango.EnsureOmniThread`, so it is tested directly.  One runner
thread runs the commands one at a time, in submission order.  One publisher thread hands
every update to ``publish`` in the order the updates happened; no other thread publishes,
so a thread holding the device's monitor (a command) never waits for a push.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import tango

from milonga.lrc.protocol import ResultCode, TaskStatus

DEFAULT_MAX_QUEUED = 16
"""How many commands may wait for the runner before submissions are rejected."""
FINISHED_KEPT = 32
"""How many finished commands `CommandExecutor.finished` remembers."""

Publish = Callable[[str, Mapping[str, Any]], None]
"""Called on the publisher thread with a command id and what changed (status, progress,
result)."""


class ProgressReporter:
    """Passed to a command as ``progress``: call it with how far along it is (0-100)."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self._report = report

    def __call__(self, percent: int) -> None:
        self._report(int(percent))


Work = Callable[[ProgressReporter, threading.Event], Any]


@dataclass(frozen=True)
class TaskRecord:
    """One long running command as the device sees it; times are `time.time` seconds."""

    command_id: str
    name: str
    submitted: float
    status: TaskStatus = TaskStatus.QUEUED
    started: float | None = None
    progress: int | None = None
    result: Any = None
    finished: float | None = None

    def summary(self) -> str:
        """A JSON object describing the command, as the lrc* attributes show it: ``uid``,
        ``name`` and ISO 8601 ``submitted_time``, then ``started_time`` and ``progress``
        once running, and ``finished_time``, ``status`` and ``result`` once finished."""
        fields: dict[str, Any] = {
            "uid": self.command_id,
            "name": self.name,
            "submitted_time": _iso(self.submitted),
        }
        if self.started is not None:
            fields["started_time"] = _iso(self.started)
        if self.finished is None:
            if self.progress is not None:
                fields["progress"] = self.progress
        else:
            fields["finished_time"] = _iso(self.finished)
            fields["status"] = self.status.name
            fields["result"] = self.result
        return json.dumps(fields)


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


@dataclass(eq=False)
class _Task:
    record: TaskRecord
    work: Work | None  # None for an Abort, which the runner only completes
    abort: threading.Event = field(default_factory=threading.Event)


class CommandExecutor:
    """Runs submitted commands one at a time and reports each change through ``publish``.

    At most ``max_queued`` commands wait; a further submission is rejected.  Call
    `shutdown` when done: it aborts what waits, signals what runs and joins both threads.
    """

    def __init__(
        self,
        publish: Publish,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED,
        name: str = "lrc",
        logger: logging.Logger | None = None,
        on_lists_changed: Callable[[], None] | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self.max_queued = max_queued
        self._publish = publish
        self._on_lists_changed = on_lists_changed
        self._logger = logger or logging.getLogger("milonga.lrc")
        self._lock = threading.Condition()
        self._queued: collections.deque[_Task] = collections.deque()
        self._running: _Task | None = None
        self._aborts: list[tuple[TaskRecord, int]] = []  # each waits for the running command
        self._finished: collections.deque[TaskRecord] = collections.deque(maxlen=FINISHED_KEPT)
        self._outbox: collections.deque[tuple[str, dict[str, Any], bool] | None] = (
            collections.deque()
        )
        self._outbox_ready = threading.Condition()
        self._closed = False
        self._serials = itertools.count(1)
        self._runner = threading.Thread(target=self._run, name=f"{name}-runner", daemon=True)
        self._publisher = threading.Thread(
            target=self._deliver, name=f"{name}-publisher", daemon=True
        )
        self._runner.start()
        self._publisher.start()

    # -- what clients call (through the device's commands) ------------------------------

    def submit(self, name: str, work: Work) -> tuple[ResultCode, str]:
        """Queue ``work`` as command ``name``: (QUEUED, command id), or (REJECTED, reason)."""
        with self._lock:
            if self._closed:
                return ResultCode.REJECTED, f"{name} rejected: the device is shutting down"
            if len(self._queued) >= self.max_queued:
                return ResultCode.REJECTED, (
                    f"{name} rejected: {len(self._queued)} commands already wait, the most "
                    f"this device queues; retry once one has finished, or Abort them"
                )
            task = _Task(self._new_record(name), work)
            self._queued.append(task)
            self._post(task.record.command_id, {"status": TaskStatus.QUEUED}, lists=True)
            self._lock.notify_all()
        return ResultCode.QUEUED, task.record.command_id

    def abort(self) -> tuple[ResultCode, str]:
        """Abort every waiting command and signal the running one to stop.

        The abort is itself a command: (STARTED, its id).  It completes once the running
        command has ended, or at once if none runs.  (REJECTED, reason) once shut down.
        """
        with self._lock:
            if self._closed:
                return ResultCode.REJECTED, "Abort rejected: the device is shutting down"
            record = self._new_record("Abort")
            aborted = self._abort_queued()
            self._post(record.command_id, {"status": TaskStatus.IN_PROGRESS}, lists=False)
            if self._running is None:
                self._complete_abort(record, aborted, stopped_running=False)
            else:
                self._running.abort.set()
                self._aborts.append((record, aborted))
        return ResultCode.STARTED, record.command_id

    def records(
        self,
    ) -> tuple[tuple[TaskRecord, ...], tuple[TaskRecord, ...], tuple[TaskRecord, ...]]:
        """The waiting, the running (the command running, if any, and the aborts waiting for
        it to stop) and the last finished commands."""
        with self._lock:
            running = () if self._running is None else (self._running.record,)
            aborting = tuple(record for record, _ in self._aborts)
            return (
                tuple(t.record for t in self._queued),
                running + aborting,
                tuple(self._finished),
            )

    def shutdown(self, join: Callable[[threading.Thread], None] = threading.Thread.join) -> None:
        """Abort everything, then wait for both threads with ``join``.  Idempotent.

        In ``delete_device``, pass a ``join`` that serves the publisher's pushes (see
        `milonga.lrc.LrcDevice.delete_device`).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._abort_queued()
            if self._running is not None:
                self._running.abort.set()
            self._lock.notify_all()
        join(self._runner)
        with self._outbox_ready:
            self._outbox.append(None)
            self._outbox_ready.notify()
        join(self._publisher)

    # -- the runner ----------------------------------------------------------------------

    def _run(self) -> None:
        with tango.EnsureOmniThread():
            while (task := self._next()) is not None:
                status, result = self._execute(task)
                with self._lock:
                    self._finish(task, status, result)
                    self._running = None
                    for abort, aborted in self._aborts:
                        self._complete_abort(abort, aborted, stopped_running=True)
                    self._aborts.clear()

    def _next(self) -> _Task | None:
        with self._lock:
            while not self._queued and not self._closed:
                self._lock.wait()
            if not self._queued:
                return None
            task = self._queued.popleft()
            task.record = replace(task.record, status=TaskStatus.IN_PROGRESS, started=time.time())
            self._running = task
            self._post(task.record.command_id, {"status": TaskStatus.IN_PROGRESS}, lists=True)
            return task

    def _execute(self, task: _Task) -> tuple[TaskStatus, Any]:
        """Run ``task``'s work: how it ended and its result.  Whatever the work raises, even
        SystemExit, KeyboardInterrupt or asyncio.CancelledError, only fails the command:
        the runner thread goes on with the next one."""
        assert task.work is not None
        name = task.record.name

        def report(percent: int) -> None:
            with self._lock:
                task.record = replace(task.record, progress=percent)
                self._post(task.record.command_id, {"progress": percent}, lists=False)

        try:
            result = task.work(ProgressReporter(report), task.abort)
            problem = _not_json(name, result)
        except BaseException as error:  # the command's own failure, whatever its type
            self._logger.warning(
                "long running command %s (%s) failed", name, task.record.command_id, exc_info=True
            )
            result, problem = None, _describe(error)
        if task.abort.is_set():
            return TaskStatus.ABORTED, _aborted(name)
        if problem is not None:
            return TaskStatus.FAILED, [ResultCode.FAILED, problem]
        return TaskStatus.COMPLETED, result

    # -- bookkeeping, with the lock held --------------------------------------------------

    def _new_record(self, name: str) -> TaskRecord:
        now = time.time()
        command_id = f"{now:.6f}_{uuid.uuid4().hex[:12]}_{next(self._serials)}_{name}"
        return TaskRecord(command_id, name, now)

    def _abort_queued(self) -> int:
        count = len(self._queued)
        while self._queued:
            task = self._queued.popleft()
            self._finish(task, TaskStatus.ABORTED, _aborted(task.record.name))
        return count

    def _complete_abort(self, record: TaskRecord, aborted: int, *, stopped_running: bool) -> None:
        running = " and the running one" if stopped_running else ""
        result = [ResultCode.OK, f"aborted {aborted} waiting command(s){running}"]
        done = replace(record, status=TaskStatus.COMPLETED, result=result, finished=time.time())
        self._finished.append(done)
        self._post(done.command_id, {"status": TaskStatus.COMPLETED, "result": result}, lists=True)

    def _finish(self, task: _Task, status: TaskStatus, result: Any) -> None:
        task.record = replace(task.record, status=status, result=result, finished=time.time())
        self._finished.append(task.record)
        self._post(task.record.command_id, {"status": status, "result": result}, lists=True)

    def _post(self, command_id: str, changes: dict[str, Any], lists: bool) -> None:
        with self._outbox_ready:
            self._outbox.append((command_id, changes, lists))
            self._outbox_ready.notify()

    # -- the publisher -------------------------------------------------------------------

    def _deliver(self) -> None:
        with tango.EnsureOmniThread():
            while True:
                with self._outbox_ready:
                    while not self._outbox:
                        self._outbox_ready.wait()
                    item = self._outbox.popleft()
                if item is None:
                    return
                command_id, changes, lists = item
                # The lists first: a client that acts on the update finds them up to date,
                # and this thread idle rather than waiting for the device's monitor.
                # What the device pushes is its own code: whatever it raises, even
                # SystemExit, must not stop the updates that follow.
                if lists and self._on_lists_changed is not None:
                    try:
                        self._on_lists_changed()
                    except BaseException:
                        self._logger.exception("could not publish the lists for %s", command_id)
                try:
                    self._publish(command_id, changes)
                except BaseException:
                    self._logger.exception("could not publish the update of %s", command_id)


def _aborted(name: str) -> list[Any]:
    """The result of command ``name`` once aborted."""
    return [ResultCode.ABORTED, f"{name} was aborted"]


def _not_json(name: str, result: Any) -> str | None:
    """Why ``result`` of command ``name`` cannot be published, or None if it can."""
    try:
        json.dumps(result)
    except (TypeError, ValueError) as error:
        return (
            f"{name} returned {type(result).__name__}, which is not JSON-serialisable "
            f"({error}); return JSON data: numbers, strings, lists, dicts"
        )
    return None


def _describe(error: BaseException) -> str:
    """``error`` as a failed command's result says it: its type, and its message if any."""
    try:
        message = str(error)
    except Exception:  # a broken __str__ of the command's own exception
        message = "(its message cannot be shown)"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
