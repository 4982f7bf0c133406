"""The sandbox's errors: pure, so that a command line can catch them before it imports
Tango."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says why and what to do."""


class ServerStartError(SandboxError):
    """A device server exited or did not come up in time; the message ends with its output.

    ``problem`` says which in one sentence, and ``output`` holds the last lines the
    process printed, often a traceback, for callers that report them their own way.
    """

    def __init__(self, problem: str, advice: str, output: str) -> None:
        super().__init__(f"{problem}. {advice}:\n{output}")
        self.problem = problem
        self.output = output
