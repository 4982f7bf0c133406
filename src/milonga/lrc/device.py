"""Device side: `LrcDevice`, a Tango device base class that speaks protocol v2, and the
`long_running_command` decorator that turns a method into a long running command."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, overload

from tango.server import Device, attribute, command

from milonga.lrc.executor import DEFAULT_MAX_QUEUED, CommandExecutor, ProgressReporter
from milonga.lrc.protocol import LRC_EVENT
from milonga.scheduler.internal_threads import allow_internal_threads, current_holder

REPLY_TYPE = "DevVarLongStringArray"
REPLY_DOC = "[[ResultCode], [command id]], or [[REJECTED], [reason]]"
LIST_ATTRIBUTES = ("lrcQueue", "lrcExecuting", "lrcFinished")
LIST_MAX = 1024
SERVED_VERSIONS = (2, 2)
OPTIONAL_ARGUMENTS = ("progress", "abort_event")


class LrcDevice(Device):
    """A device whose `long_running_command` methods run one at a time on its executor.

    Subclasses that override ``init_device`` or ``delete_device`` must call ``super()``.
    ``MAX_QUEUED_COMMANDS`` bounds how many commands may wait; set it in a subclass.
    """

    MAX_QUEUED_COMMANDS: ClassVar[int] = DEFAULT_MAX_QUEUED

    def init_device(self) -> None:
        super().init_device()  # type: ignore[no-untyped-call]
        self._lrc_last_event = ["", ""]
        for name in (LRC_EVENT, *LIST_ATTRIBUTES):
            self.set_change_event(name, True, False)
        self._lrc_executor = CommandExecutor(
            self._publish_lrc_update,
            max_queued=self.MAX_QUEUED_COMMANDS,
            name=f"lrc-{self.get_name()}",
            on_lists_changed=self._publish_lrc_lists,
        )

    def delete_device(self) -> None:
        executor: CommandExecutor | None = getattr(self, "_lrc_executor", None)
        if executor is not None:
            # The executor's threads push on this device, whose monitor this thread holds.
            with allow_internal_threads(self):
                executor.shutdown(join=join_serving_pushes)
        super().delete_device()  # type: ignore[no-untyped-call]

    @property
    def lrc_executor(self) -> CommandExecutor:
        """This device's executor; exists once ``LrcDevice.init_device`` has run."""
        executor: CommandExecutor | None = getattr(self, "_lrc_executor", None)
        if executor is None:
            raise RuntimeError(
                f"{type(self).__name__}.init_device() did not call super().init_device(), "
                "so the device has no long-running-command executor; call it first"
            )
        return executor

    # -- the protocol's attributes and the Abort command ---------------------------------

    @attribute(dtype=(int,), max_dim_x=2)  # type: ignore[untyped-decorator]
    def lrcProtocolVersions(self) -> tuple[int, int]:
        """The oldest and newest long-running-command protocol versions the device speaks."""
        return SERVED_VERSIONS

    @attribute(dtype=(str,), max_dim_x=2)  # type: ignore[untyped-decorator]
    def _lrcEvent(self) -> list[str]:
        """The last update: [command id, JSON with any of status, progress and result]."""
        return self._lrc_last_event

    @attribute(dtype=(str,), max_dim_x=LIST_MAX)  # type: ignore[untyped-decorator]
    def lrcQueue(self) -> list[str]:
        """The commands waiting to run, as JSON objects, oldest first."""
        return [record.summary() for record in self.lrc_executor.records()[0]]

    @attribute(dtype=(str,), max_dim_x=LIST_MAX)  # type: ignore[untyped-decorator]
    def lrcExecuting(self) -> list[str]:
        """The command running now, if any, and the aborts waiting for it to stop, as JSON
        objects."""
        return [record.summary() for record in self.lrc_executor.records()[1]]

    @attribute(dtype=(str,), max_dim_x=LIST_MAX)  # type: ignore[untyped-decorator]
    def lrcFinished(self) -> list[str]:
        """The last finished commands, as JSON objects, oldest first."""
        return [record.summary() for record in self.lrc_executor.records()[2]]

    @command(dtype_out=REPLY_TYPE, doc_out=REPLY_DOC)  # type: ignore[untyped-decorator]
    def Abort(self) -> list[list[Any]]:
        """Abort the waiting commands and signal the running one; completes when it ends."""
        code, command_id = self.lrc_executor.abort()
        return [[int(code)], [command_id]]

    # -- publishing, on the executor's publisher thread ---------------------------------

    def _publish_lrc_update(self, command_id: str, changes: Mapping[str, Any]) -> None:
        self._lrc_last_event = [command_id, json.dumps(changes)]
        self.push_change_event(LRC_EVENT, self._lrc_last_event)

    def _publish_lrc_lists(self) -> None:
        queued, executing, finished = self.lrc_executor.records()
        for name, records in zip(LIST_ATTRIBUTES, (queued, executing, finished), strict=True):
            self.push_change_event(name, [record.summary() for record in records])


CommandMethod = Callable[..., Any]


@overload
def long_running_command(method: CommandMethod) -> CommandMethod: ...


@overload
def long_running_command(
    *, dtype_in: Any = None, doc_in: str = ""
) -> Callable[[CommandMethod], CommandMethod]: ...


def long_running_command(
    method: CommandMethod | None = None, *, dtype_in: Any = None, doc_in: str = ""
) -> CommandMethod | Callable[[CommandMethod], CommandMethod]:
    """Make a method of an `LrcDevice` a long running command, with or without arguments.

    The Tango command queues the method and replies ``[[QUEUED], [command id]]`` at once.
    The method runs on the device's executor; it gets keyword arguments ``progress`` (a
    `ProgressReporter`) and ``abort_event`` (a `threading.Event`) if it names them.  What it
    returns, which must be JSON data, is the result; if it raises, the command FAILED.
    """
    if method is None:
        return lambda decorated: _as_command(decorated, dtype_in, doc_in)
    return _as_command(method, dtype_in, doc_in)


def _as_command(method: CommandMethod, dtype_in: Any, doc_in: str) -> CommandMethod:
    """The Tango command that queues ``method`` on the device's executor."""
    wanted = [name for name in OPTIONAL_ARGUMENTS if name in inspect.signature(method).parameters]
    name = method.__name__

    def submit(device: LrcDevice, *argin: Any) -> list[list[Any]]:
        def work(progress: ProgressReporter, abort_event: threading.Event) -> Any:
            extras = {"progress": progress, "abort_event": abort_event}
            return method(device, *argin, **{key: extras[key] for key in wanted})

        code, text = device.lrc_executor.submit(name, work)
        return [[int(code)], [text]]

    def without_argument(self: LrcDevice) -> list[list[Any]]:
        return submit(self)

    def with_argument(self: LrcDevice, argin: Any) -> list[list[Any]]:
        return submit(self, argin)

    handler = without_argument if dtype_in is None else with_argument
    handler.__name__ = handler.__qualname__ = name
    handler.__doc__ = method.__doc__
    handler.__annotations__ = {}  # PyTango would read the types from them
    options: dict[str, Any] = {"dtype_out": REPLY_TYPE, "doc_out": REPLY_DOC}
    if dtype_in is not None:
        options.update(dtype_in=dtype_in, doc_in=doc_in)
    tango_command: CommandMethod = command(f=handler, **options)
    return tango_command


def join_serving_pushes(thread: threading.Thread) -> None:
    """Wait for ``thread``, carrying out the pushes it hands to this monitor-holding thread."""
    holder = current_holder()
    if holder is None:
        thread.join()
    else:
        holder.serve_while(thread.is_alive)
