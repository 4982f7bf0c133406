"""An embedded, real Tango control system for tests, demos and benchmarks."""

from milonga.sandbox.sandbox import SandboxError, ServerStartError, TangoSandbox

__all__ = ["SandboxError", "ServerStartError", "TangoSandbox"]
