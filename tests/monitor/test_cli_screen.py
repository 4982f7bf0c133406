"""The monitor's screen when a stop signal comes as a snapshot is written: it is given up
only if it takes nothing more, so that the last snapshot still shows after a signal that
came just as the previous one had gone out."""

from __future__ import annotations

import fcntl
import io
import os
import signal
from collections.abc import Iterator

import pytest

from milonga.monitor.outputs import Screen, _stuck

PIPE_BYTES = 4096  # the smallest pipe Linux makes: one page


class SignalAfterFlush(io.TextIOWrapper):
    """Standard output that receives Ctrl-C right after its first flush has written all."""

    signalled = False

    def flush(self) -> None:
        super().flush()
        if not self.signalled:
            self.signalled = True
            signal.raise_signal(signal.SIGINT)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe of the usual size, 16 pages."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_a_pipe_with_room_does_not_block_and_a_full_one_does(pipe: tuple[int, int]) -> None:
    _, write_end = pipe
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    with os.fdopen(os.dup(write_end), "w") as out:
        assert not _stuck(out)
        assert os.write(write_end, b"x" * PIPE_BYTES) == PIPE_BYTES  # now full
        assert _stuck(out)
    assert not _stuck(io.StringIO())


def test_a_signal_just_after_a_snapshot_went_out_leaves_the_screen(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    out = SignalAfterFlush(os.fdopen(os.dup(write_end), "wb"), encoding="utf-8")
    screen = Screen(out, lambda update: "never rendered")
    with pytest.raises(KeyboardInterrupt):
        screen.show("the snapshot\n")

    assert not screen.closed
    assert os.read(read_end, 100) == b"the snapshot\n"
    out.close()
