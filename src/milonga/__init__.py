"""milonga: event-driven Tango Controls clients that keep up.

The names are imported on first use: the command-line tools import this package before
they can handle Ctrl-C, so it must not import Tango (or even the package metadata).
"""

from typing import TYPE_CHECKING

from milonga._lazy import lazy_attributes

if TYPE_CHECKING:
    from milonga._version import __version__
    from milonga.scheduler import (
        AsyncCallbackScheduler,
        CallbackID,
        CallbackScheduler,
        allow_internal_threads,
        default_scheduler,
        shutdown_default_scheduler,
    )

__all__ = [
    "AsyncCallbackScheduler",
    "CallbackID",
    "CallbackScheduler",
    "__version__",
    "allow_internal_threads",
    "default_scheduler",
    "shutdown_default_scheduler",
]

if not TYPE_CHECKING:  # mypy reads the imports above, and still flags unknown names
    __getattr__ = lazy_attributes(
        __name__,
        {
            name: "milonga._version" if name == "__version__" else "milonga.scheduler"
            for name in __all__
        },
    )
