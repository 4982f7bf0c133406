"""The sandbox's child processes: each logs to a file, is always stopped for good, and
stops by itself the moment the sandbox process is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

GRACEFUL_STOP_SECONDS = 5.0
TAIL_LINES = 30
REAPER_SCRIPT = Path(__file__).with_name("_reaper.py")

_PRIVATE_FDS: set[int] = set()
"""The descriptors of this process that a copy of it made by ``os.fork()`` (as
multiprocessing makes them) must not keep: the running sandboxes' lifelines and directory
locks.  Kept, they would keep the sandbox's children alive after it is killed, and its
directory locked after it stops."""
_PRIVATE_FDS_LOCK = threading.RLock()
"""Held while descriptors are opened or closed, and across each fork: a fork never
happens between opening a descriptor and noting it."""


def open_private(opener: Callable[[], tuple[int, ...]]) -> tuple[int, ...]:
    """Call ``opener`` and return the descriptors it opened, which only this process holds:
    a forked copy closes them at once.  Close them with `close_private`."""
    with _PRIVATE_FDS_LOCK:
        fds = opener()
        _PRIVATE_FDS.update(fds)
    return fds


def close_private(*fds: int) -> None:
    """Close descriptors that `open_private` opened."""
    with _PRIVATE_FDS_LOCK:
        for fd in fds:
            _PRIVATE_FDS.discard(fd)
            os.close(fd)


def _close_private_in_forked_child() -> None:
    """In a process just forked: close what only its parent may hold, and let go of the
    lock the fork was made under."""
    for fd in _PRIVATE_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _PRIVATE_FDS.clear()
    _PRIVATE_FDS_LOCK.release()


# Once per process: a forked child inherits both the registration and this module.
os.register_at_fork(
    before=_PRIVATE_FDS_LOCK.acquire,
    after_in_parent=_PRIVATE_FDS_LOCK.release,
    after_in_child=_close_private_in_forked_child,
)


class Lifeline:
    """A pipe that tells the sandbox's processes that the sandbox process is gone.

    Only the sandbox process holds the write end, and nothing is ever written to it.  Each
    child inherits the read end and blocks reading it; the read returns end-of-file the
    moment the sandbox process ends, however it ends (SIGKILL included), because the kernel
    then closes the write end; a copy of the sandbox process made by ``os.fork()`` closes
    both ends at once (see `open_private`), so it keeps no child alive.  PR_SET_PDEATHSIG
    would fire when the *thread* that started a child ends, which would kill servers
    started from a short-lived thread.
    """

    def __init__(self) -> None:
        # Neither end is inherited across exec unless passed, nor kept by a fork.
        self.read_fd, self._write_fd = open_private(os.pipe)

    def close(self) -> None:
        """Tell every child still running that the sandbox is gone; call it once."""
        close_private(self._write_fd, self.read_fd)


class ChildProcess:
    """One ``milonga.sandbox._child`` process in its own session, logging to ``log_path``.

    It runs on the interpreter ``python``, by default the one running this process.  It
    inherits the read end of ``lifeline`` and the descriptors ``inherited`` (the sandbox
    directory's lock, so that the lock holds until the child is gone too).

    The process runs in a new session so that a Ctrl-C in the terminal reaches only the
    sandbox, which then stops its children in order.  The log file may hold the output of
    earlier processes: this one's starts at ``log_start``.
    """

    def __init__(
        self,
        label: str,
        child_args: list[str],
        log_path: Path,
        *,
        env: dict[str, str],
        lifeline: Lifeline,
        inherited: tuple[int, ...] = (),
        python: str = sys.executable,
    ):
        self.label = label
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.log_start = log.tell()
            self._popen = subprocess.Popen(
                [
                    python,
                    "-u",
                    "-m",
                    "milonga.sandbox._child",
                    str(lifeline.read_fd),
                    *child_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=log_path.parent,
                start_new_session=True,
                pass_fds=(lifeline.read_fd, *inherited),
            )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def exit_code(self) -> int | None:
        """The exit status, or None while the process runs."""
        return self._popen.poll()

    def output(self) -> str:
        """Everything this process has written so far."""
        return read_log(self.log_path, self.log_start)

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


def read_log(path: Path, start: int = 0) -> str:
    """The text of log file ``path`` from byte ``start`` on; empty if there is none."""
    try:
        with path.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


class Reaper:
    """A small process that removes a temporary sandbox directory once the sandbox and all
    its processes are gone, should the sandbox process be killed before it could.

    It waits for the lock on ``lock_path``, which the sandbox process and its children
    hold until the last of them ends.  It runs this process's interpreter in isolated mode
    on the standard library only, in a session of its own.
    """

    def __init__(self, directory: Path, lock_path: Path) -> None:
        self._popen = subprocess.Popen(
            [sys.executable, "-I", "-S", str(REAPER_SCRIPT), str(directory), str(lock_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )

    def wait(self, timeout: float = GRACEFUL_STOP_SECONDS) -> None:
        """Wait until it has finished, once the sandbox has released the lock; kill it if
        something else still holds the lock after ``timeout``."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
