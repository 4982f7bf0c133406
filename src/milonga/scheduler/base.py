"""What the threaded and the asyncio scheduler share: their streams, queues and statistics.

A scheduler is a stream side (`Subscriptions`) and a runner side joined by one
`Dispatcher`: the stream side puts each event into its stream's queue there, and the
runner side (worker threads, or tasks of an event loop) takes the events out, fairly, and
runs their callbacks.
"""

from __future__ import annotations

import itertools
import logging

import tango

from milonga.scheduler.dispatch import Dispatcher
from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue
from milonga.scheduler.stats import SchedulerStats
from milonga.scheduler.streams import CallbackID, QueuedEvent
from milonga.scheduler.subscriptions import Subscriptions


class SchedulerBase:
    """The operations both schedulers offer in the same form."""

    def __init__(self, name: str | None, logger: logging.Logger | None) -> None:
        self.name = name or f"{type(self).__name__}-{next(_instances)}"
        self._logger = logger or logging.getLogger("milonga.scheduler")
        self._dispatcher: Dispatcher[QueuedEvent] = Dispatcher()
        self._subscriptions = Subscriptions(
            self.name, type(self).__name__, self._dispatcher, self._logger
        )

    def allocate_queue(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> EventQueue[QueuedEvent]:
        """A new queue holding up to ``queue_size`` events, for a ``queue_factory``."""
        return EventQueue(size=queue_size)

    def get_queue(
        self, device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
    ) -> EventQueue[QueuedEvent]:
        """The queue of a connected stream, for a ``queue_factory`` that shares it."""
        return self._subscriptions.queue_of(device, attr_name, event_type)

    def unregister_callback(self, callback_id: CallbackID) -> None:
        """Stop calling the callback; it is not called again once this returns, except by a
        worker that had already started calling it.  The last callback of a stream not
        explicitly connected unsubscribes it.  Does nothing once shut down, which
        unregistered everything.  Raises KeyError for an id not registered here."""
        self._subscriptions.unregister(callback_id)

    def disconnect_event_stream(
        self, device: tango.DeviceProxy | str, attr_name: str, event_type: tango.EventType
    ) -> None:
        """Undo ``connect_event_stream``: unsubscribe once the stream has no callbacks left.
        Does nothing once shut down, which disconnected everything."""
        self._subscriptions.disconnect(device, attr_name, event_type)

    def stats(self) -> SchedulerStats:
        """Depth, counts and timing percentiles of every queue; see `QueueStats`."""
        return self._subscriptions.stats()

    @property
    def is_shut_down(self) -> bool:
        """Whether shutting down has begun; a scheduler shut down accepts no work."""
        return self._subscriptions.closed


_instances = itertools.count(1)
