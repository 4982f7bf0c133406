"""A child process whose output goes to a log file and which is always stopped for good."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

GRACEFUL_STOP_SECONDS = 5.0
TAIL_LINES = 30


class ChildProcess:
    """One ``milonga.sandbox._child`` process in its own session, logging to ``log_path``.

    It runs on the interpreter ``python``, by default the one running this process.

    The process runs in a new session so that a Ctrl-C in the terminal reaches only the
    sandbox, which then stops its children in order.
    """

    def __init__(
        self,
        label: str,
        child_args: list[str],
        log_path: Path,
        env: dict[str, str],
        python: str = sys.executable,
    ):
        self.label = label
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                [python, "-u", "-m", "milonga.sandbox._child", *child_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=log_path.parent,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def exit_code(self) -> int | None:
        """The exit status, or None while the process runs."""
        return self._popen.poll()

    def output(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of output, for error messages."""
        return "\n".join(deque(self.output().splitlines(), maxlen=lines))

    def stop(self, timeout: float = GRACEFUL_STOP_SECONDS) -> None:
        """SIGTERM the whole process group, then SIGKILL it if it outlives ``timeout``."""
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        # Kill the group even after a clean exit: nothing it spawned may outlive it.
        self._signal_group(signal.SIGKILL)
        self._popen.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)
