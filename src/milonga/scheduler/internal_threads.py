"""Let worker threads push events on a device whose monitor another thread holds.

cppTango's ``push_*_event`` methods take the device monitor.  While ``delete_device`` (or
any command) holds it, a worker thread that pushes waits, and Tango fails the push with
``API_CommandTimedOut`` after its 3.2 s monitor timeout.  Releasing the monitor would let
outside client requests into a device that is being deleted, so instead the holding thread
keeps it and carries out those pushes on the workers' behalf while it waits for them.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import tango

SERVE_POLL_SECONDS = 0.01

_holders = threading.local()


class MonitorHolder:
    """The thread that holds device monitors and runs the pushes other threads hand it."""

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._serving_devices = 0

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` on the holding thread and return its result, raising its error."""
        call = functools.partial(method, *args, **kwargs)
        with self._lock:
            if threading.current_thread() is self.thread or self._serving_devices == 0:
                handed_over = False
            else:
                result: Future[Any] = Future()
                self._requests.put((call, result))
                handed_over = True
        return result.result() if handed_over else call()

    def serve_while(self, waiting: Callable[[], bool]) -> None:
        """Carry out handed-over calls until ``waiting()`` turns false."""
        while waiting():
            self.serve(SERVE_POLL_SECONDS)

    def serve(self, timeout: float | None = None) -> None:
        """Carry out handed-over calls, waiting up to ``timeout`` for the first one."""
        try:
            call, result = self._requests.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            try:
                result.set_result(call())
            except BaseException as error:
                result.set_exception(error)
            try:
                call, result = self._requests.get_nowait()
            except queue.Empty:
                return

    @contextmanager
    def serving(self, device: tango.DeviceImpl) -> Iterator[None]:
        """Route ``device``'s ``push_*_event`` calls from other threads to this thread."""
        shadowed = _shadow_pushes(device, self)
        with self._lock:
            self._serving_devices += 1
        try:
            yield
        finally:
            with self._lock:
                self._serving_devices -= 1
            for name in shadowed:
                delattr(device, name)
            self.serve(timeout=0)  # calls handed over just before the context closed


def current_holder() -> MonitorHolder | None:
    """The calling thread's holder, if it is inside `allow_internal_threads`."""
    holder: MonitorHolder | None = getattr(_holders, "holder", None)
    return holder


@contextmanager
def allow_internal_threads(device: tango.DeviceImpl) -> Iterator[None]:
    """Let worker threads push events on ``device`` while this thread holds its monitor.

    Use it around `CallbackScheduler.shutdown` in ``delete_device``: the workers'
    ``device.push_*_event`` calls are then run by this thread, which keeps the monitor, so
    they neither wait for Tango's monitor timeout nor let outside client requests in.
    """
    if not isinstance(device, tango.DeviceImpl):
        raise TypeError(
            f"allow_internal_threads() needs the Tango device whose monitor this thread "
            f"holds (self inside a Device method), got {type(device).__name__}"
        )
    holder = current_holder()
    outermost = holder is None
    if holder is None:
        holder = _holders.holder = MonitorHolder()
    try:
        with holder.serving(device):
            yield
    finally:
        if outermost:
            del _holders.holder


def _shadow_pushes(device: tango.DeviceImpl, holder: MonitorHolder) -> list[str]:
    """Give ``device`` instance attributes that hand its push methods over to ``holder``."""
    shadowed = []
    for name in dir(type(device)):
        if not name.startswith("push_") or name in vars(device):
            continue
        method = getattr(device, name)
        if callable(method):
            setattr(device, name, functools.partial(holder.call, method))
            shadowed.append(name)
    return shadowed
