"""CallbackScheduler: Tango event callbacks served fairly from bounded queues on worker threads."""

from milonga.scheduler.default import default_scheduler, shutdown_default_scheduler
from milonga.scheduler.internal_threads import allow_internal_threads
from milonga.scheduler.queues import DEFAULT_QUEUE_SIZE, EventQueue, QueueSizeError
from milonga.scheduler.scheduler import (
    CallbackID,
    CallbackScheduler,
    QueuedEvent,
    SchedulerShutDownError,
    UnknownStreamError,
)
from milonga.scheduler.stats import QueueStats, SchedulerStats

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "CallbackID",
    "CallbackScheduler",
    "EventQueue",
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
