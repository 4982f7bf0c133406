"""Tango event callbacks served fairly from bounded queues: on worker threads
(CallbackScheduler) or on an asyncio event loop (AsyncCallbackScheduler)."""

from milonga.scheduler.asyncio_scheduler import AsyncCallbackScheduler, EventStream
from milonga.scheduler.default import default_scheduler, shutdown_default_scheduler
from milonga.scheduler.internal_threads import allow_internal_threads
from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue, QueueSizeError
from milonga.scheduler.scheduler import CallbackScheduler
from milonga.scheduler.stats import QueueStats, SchedulerStats
from milonga.scheduler.streams import CallbackID, QueuedEvent
from milonga.scheduler.subscriptions import SchedulerShutDownError, UnknownStreamError

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "AsyncCallbackScheduler",
    "CallbackID",
    "CallbackScheduler",
    "EventQueue",
    "EventStream",
    "QueueSizeError",
    "QueueStats",
    "QueuedEvent",
    "SchedulerShutDownError",
    "SchedulerStats",
    "UnknownStreamError",
    "allow_internal_threads",
    "default_scheduler",
    "shutdown_default_scheduler",
]
