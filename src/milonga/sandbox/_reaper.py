"""Removes a sandbox's temporary directory once the sandbox and all its processes are gone.

Run as ``python -I -S _reaper.py DIRECTORY LOCK`` (see `milonga.sandbox._process.Reaper`):
it uses the standard library only, so it runs whatever ``sys.path`` the sandbox had.
The sandbox process holds an exclusive lock on the file ``LOCK`` and its children inherit
it, so the lock is free only once every one of them has ended, however they ended.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys


def reap(directory: str, lock_path: str) -> None:
    """Wait until nothing holds the lock on ``lock_path``, then remove ``directory``."""
    try:
        lock = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return  # the sandbox has already removed its directory
    fcntl.flock(lock, fcntl.LOCK_EX)
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # whoever stops the sandbox, this must run
    reap(*sys.argv[1:])
