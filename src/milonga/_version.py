"""milonga's version, as installed (reading it imports importlib.metadata, which is slow)."""

from importlib.metadata import version

__version__ = version("milonga")
