"""Standard output and error of milonga's command-line tools: closed, failing or unable
to encode some characters."""

from __future__ import annotations

import contextlib
import io
import os
from typing import TextIO


def usable(prog: str, out: TextIO | None, err: TextIO | None) -> bool:
    """Whether ``out`` and ``err`` are open (a program started with ``>&-`` or ``2>&-``
    has None instead); if only ``out`` is closed, say so on ``err``.  Open streams then
    write characters their encodings lack (μ and ± under Latin-1) as backslash escapes.
    """
    if err is None:  # nowhere to say anything
        return False
    if out is None:
        print(
            f"{prog}: error: standard output is closed; send it to a terminal, a file or a pipe",
            file=err,
            flush=True,
        )
        return False
    for stream in (out, err):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    return True


def discard(stream: TextIO) -> None:
    """Send the rest of ``stream``'s output, buffered text included, nowhere."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def takes_output(stream: TextIO) -> bool:
    """Whether ``stream`` still takes output; probing it may write a newline."""
    try:
        stream.flush()
        os.write(stream.fileno(), b"\n")
    except OSError:
        return False
    return True
