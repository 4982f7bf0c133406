"""The servers one test defines in the shared sandbox (the ``sandbox_servers`` fixture)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from milonga.sandbox import TangoSandbox


class SandboxServers:
    """The servers one test defines in the shared sandbox; `cleanup` removes them all."""

    def __init__(self, sandbox: TangoSandbox) -> None:
        self.sandbox = sandbox
        self._defined: list[str] = []

    def add_device(
        self,
        server: str,
        device_class: str,
        name: str,
        properties: Mapping[str, Any] | None = None,
    ) -> str:
        """Define a device (see `TangoSandbox.add_device`) and return its full TRL."""
        self.sandbox.add_device(server, device_class, name, properties)
        if server not in self._defined:
            self._defined.append(server)
        return self.sandbox.trl(name)

    def start(self, server: str, source: str | os.PathLike[str]) -> None:
        """Start a server whose devices this test defined (see `TangoSandbox.start_server`)."""
        self.sandbox.start_server(server, source)

    def cleanup(self) -> None:
        """Stop and forget every server this test defined, last defined first."""
        for server in reversed(self._defined):
            self.sandbox.delete_server(server)
        self._defined.clear()
