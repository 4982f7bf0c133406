"""An embedded, real Tango control system for tests, demos and benchmarks.

The names are imported on first use, so that the sandbox's own processes
(`milonga.sandbox._child`) can start watching their parent before they import Tango.
"""

from typing import TYPE_CHECKING

from milonga._lazy import lazy_attributes
from milonga.sandbox.errors import SandboxError, ServerStartError

if TYPE_CHECKING:
    from milonga.sandbox.sandbox import TangoSandbox

__all__ = ["SandboxError", "ServerStartError", "TangoSandbox"]

if not TYPE_CHECKING:  # mypy reads the imports above, and still flags unknown names
    __getattr__ = lazy_attributes(__name__, {"TangoSandbox": "milonga.sandbox.sandbox"})
