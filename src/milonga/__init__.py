"""milonga: event-driven Tango Controls clients that keep up."""

from importlib.metadata import version

from milonga.scheduler import (
    CallbackID,
    CallbackScheduler,
    allow_internal_threads,
    default_scheduler,
    shutdown_default_scheduler,
)

__version__ = version("milonga")

__all__ = [
    "CallbackID",
    "CallbackScheduler",
    "__version__",
    "allow_internal_threads",
    "default_scheduler",
    "shutdown_default_scheduler",
]
