"""Package attributes imported on first use, so that importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that, the first time a name of ``sources``
    is looked up, imports the module it maps to and returns that name from it.

    milonga's command-line tools and the sandbox's processes import their packages before
    they can handle Ctrl-C or watch for their parent's death; this keeps Tango, numpy and
    the package metadata out of those imports.  Any other name raises AttributeError.
    """
    exported = dict(sources)

    def __getattr__(name: str) -> Any:
        if name not in exported:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exported[name]), name)

    return __getattr__
