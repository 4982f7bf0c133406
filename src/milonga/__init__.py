"""milonga: event-driven Tango Controls clients that keep up."""

from importlib.metadata import version

__version__ = version("milonga")

__all__ = ["__version__"]
