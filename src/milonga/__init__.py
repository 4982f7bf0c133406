"""milonga: event-driven Tango Controls clients that keep up."""

from importlib.metadata import version

from milonga.scheduler import CallbackID, CallbackScheduler

__version__ = version("milonga")

__all__ = ["CallbackID", "CallbackScheduler", "__version__"]
