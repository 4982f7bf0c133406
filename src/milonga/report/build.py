"""From a recording to its report: read, analyse, draw, and write one HTML file.

The recording is streamed: each poll goes through `Analysis` and into the `Timeline` at
once, so no list of polls is kept.  The servers' figures are then drawn on every core,
in worker processes forked for it (`draw_servers`).  The page is built whole in memory,
then written to a temporary file beside the output and renamed over it, so a report
that fails or is interrupted leaves neither a half-written page nor a temporary file.
Pure code, no Tango.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import secrets
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import NamedTuple

from milonga._version import __version__
from milonga.monitor.analysis import Analysis
from milonga.monitor.jsonl import PollRecordError, RecordProblem, iter_polls
from milonga.report.page import PROBLEMS_LISTED, PageFacts, render_page
from milonga.report.plots import Drawn, findings_figure, server_figure
from milonga.report.timeline import Timeline

GC_THRESHOLD = 100_000
"""Allocations between two young-generation collections while a recording is read: it
makes millions of short-lived objects that hold no cycle, so the default (700) makes
the collector run often for nothing."""


class ReportError(Exception):
    """A report cannot be made; the message says why and what to do."""


class RecordingError(ReportError):
    """The recording cannot be read, or holds no poll, or is the output itself."""


class OutputError(ReportError):
    """The report cannot be written where it was asked for."""


class DrawingError(ReportError):
    """A worker process failed to draw a figure, or ended without sending it; the
    message names the server and holds the worker's traceback.  A fault of milonga."""


class Written(NamedTuple):
    """A report that was written."""

    path: Path
    polls: int
    servers: int
    size: int
    """Bytes."""


def default_output(recording: str | os.PathLike[str]) -> Path:
    """``RUN.html`` beside ``RUN.jsonl`` (or beside ``RUN`` with any other suffix)."""
    return Path(recording).with_suffix(".html")


def write_report(
    recording: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    warn: Callable[[str], None],
) -> Written:
    """Write the HTML report of ``recording`` to ``output``, replacing it if it exists
    (a symbolic link: the file it points to).

    ``warn`` gets each part of the recording that cannot be read (a message naming the
    line); the rest is reported.  The page lists the first `PROBLEMS_LISTED` of them,
    and every message about the whole file (which counts lines not told one by one),
    and says how many more there were.  Raises `RecordingError` if the recording cannot be read,
    holds no poll or is ``output`` itself, and `OutputError` if ``output`` cannot be
    written: one that exists and is not a regular file, or whose directory is missing
    or refuses a new file, is refused before the recording is read.  A failure, or an
    interruption, leaves ``output`` as it was.
    """
    recording, output = Path(recording), Path(output)
    _check_paths(recording, output)
    warnings: list[str] = []
    count = 0

    def problem(found: RecordProblem) -> None:
        nonlocal count
        count += 1
        if len(warnings) < PROBLEMS_LISTED or found.line == 0:  # 0: a count of others
            warnings.append(found.message)
        warn(found.message)

    with _Replacement(output) as replacement:
        timeline = read_timeline(recording, problem)
        facts = PageFacts(
            recording=str(recording),
            generated=datetime.now().astimezone(),
            version=__version__,
            warnings=tuple(warnings),
            problems=count,
        )
        pictures = draw_servers(timeline)
        page = render_page(timeline, facts, findings_figure(timeline), pictures).encode("utf-8")
        replacement.commit(page)
    return Written(output, timeline.polls, len(timeline.servers), len(page))


def read_timeline(recording: Path, problem: Callable[[RecordProblem], None]) -> Timeline:
    """The finished `Timeline` of ``recording``, read one poll at a time; each line that
    cannot be read goes to ``problem``.  Raises `RecordingError` if the file cannot be
    read, holds no poll or does not look like a recording (its first lines are no
    poll)."""
    timeline = Timeline()
    analysis = Analysis()
    try:
        with _collecting_seldom():
            for poll in iter_polls(recording, problems=problem):
                timeline.add(analysis.add(poll))
    except OSError as error:
        raise RecordingError(
            f"cannot read {recording} ({error.strerror or error}); give a recording made by "
            "tango-event-monitor -o FILE that this user may read"
        ) from None
    except PollRecordError as error:  # its first lines are no poll: no recording at all
        raise RecordingError(str(error)) from None
    if not timeline.polls:
        raise RecordingError(
            f"{recording} holds no poll that can be read; expected the JSON Lines recording "
            "of tango-event-monitor -o FILE, one poll per line: record one, or give another file"
        )
    timeline.finish()
    return timeline


@contextmanager
def _collecting_seldom() -> Iterator[None]:
    """Within it, the young generation is collected every `GC_THRESHOLD` allocations and
    the objects that exist on entry are left out of garbage collection (`gc.freeze`);
    on exit the thresholds are as before and those objects collected again (unless some
    were already frozen on entry: then nothing is frozen, so nothing is unfrozen)."""
    thresholds = gc.get_threshold()
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freezing:
            gc.unfreeze()


def draw_servers(timeline: Timeline) -> dict[str, Drawn]:
    """The figure of each server of ``timeline``, in its order, drawn on every core.

    With two cores or more, two servers or more and the "fork" start method, worker
    processes forked now (so they share ``timeline`` as it is) draw one server at a
    time and send back the drawing; otherwise this process draws them.  The workers
    ignore Ctrl-C: this process stops them (SIGKILL: they hold nothing else) and waits
    for them before it returns or raises, whatever happens.  Raises `DrawingError` if a
    worker fails."""
    admins = list(timeline.servers)
    workers = min(_cores(), len(admins))
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return {admin: server_figure(timeline, timeline.servers[admin]) for admin in admins}
    drawn = _draw_in_workers(timeline, admins, workers)
    return {admin: drawn[admin] for admin in admins}


def _cores() -> int:
    """How many cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
"""The signals that stop a report: blocked while the workers are forked, so that each
ignores them (or takes the default action) before one can arrive."""


def _draw_in_workers(timeline: Timeline, admins: Sequence[str], count: int) -> dict[str, Drawn]:
    """Draw the figures of ``admins`` in ``count`` forked workers, handing each the next
    server as soon as it sends a figure back."""
    context = multiprocessing.get_context("fork")
    started: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    drawn: dict[str, Drawn] = {}
    waiting = iter(admins)
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            for number in range(count):
                ours, theirs = context.Pipe()
                inherited = [connection for _, connection in started] + [ours]
                process = context.Process(
                    target=_worker,
                    args=(timeline, theirs, inherited),
                    name=f"milonga report figures {number + 1}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                started.append((process, ours))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        busy = {connection: _hand(connection, waiting) for _, connection in started}
        while any(busy.values()):
            for ready in wait([connection for connection, admin in busy.items() if admin]):
                assert isinstance(ready, Connection)
                admin = busy[ready]
                assert admin is not None
                drawn[admin] = _received(ready, admin, started)
                busy[ready] = _hand(ready, waiting)
        for worker, _ in started:
            worker.join()  # each ends on the None it was sent
    finally:
        for worker, connection in started:
            connection.close()
            if worker.is_alive():
                worker.kill()
            worker.join()
    return drawn


def _hand(connection: Connection, waiting: Iterator[str]) -> str | None:
    """Send the worker at ``connection`` the next server of ``waiting`` to draw, or None
    to tell it to end; return what was sent."""
    admin = next(waiting, None)
    connection.send(admin)
    return admin


def _received(
    connection: Connection,
    admin: str,
    started: Sequence[tuple[multiprocessing.process.BaseProcess, Connection]],
) -> Drawn:
    """The figure of ``admin`` the worker at ``connection`` sent; raises `DrawingError`
    with its traceback if it failed, or its exit status if it ended first."""
    try:
        drawing, failure = connection.recv()
    except EOFError:
        (process,) = [process for process, ours in started if ours is connection]
        process.join()
        raise DrawingError(
            f"the worker process drawing the figure of {admin} ended (exit status "
            f"{process.exitcode}) without sending it; this is a fault of milonga: report "
            "it, with the recording if you may"
        ) from None
    if drawing is None:
        raise DrawingError(
            f"drawing the figure of {admin} failed in a worker process; this is a fault of "
            f"milonga: report it, with this message. The worker's traceback:\n{failure}"
        )
    assert isinstance(drawing, Drawn)
    return drawing


def _worker(timeline: Timeline, connection: Connection, inherited: Sequence[Connection]) -> None:
    """In a forked worker: draw each server this process is sent, until it is sent
    None or its parent is gone, and send back (figure, "") or (None, traceback).

    It ignores Ctrl-C, dies of SIGTERM and SIGHUP as by default, and closes the parent's
    ends of the pipes it inherited, so that each worker sees the parent go."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    for other in inherited:
        other.close()
    try:
        while (admin := connection.recv()) is not None:
            try:
                result: tuple[Drawn | None, str] = (
                    server_figure(timeline, timeline.servers[admin]),
                    "",
                )
            except Exception:
                result = (None, traceback.format_exc())
            connection.send(result)
    except (EOFError, OSError):
        return  # the parent is gone: nobody wants the figures


def _check_paths(recording: Path, output: Path) -> None:
    """Refuse a recording that is a directory or missing, and an output that is the
    recording, a directory or anything else that is not a regular file (a device, a
    pipe, a socket), or whose directory does not exist."""
    if recording.is_dir():
        raise RecordingError(
            f"{recording} is a directory; expected the JSON Lines file of a recording made "
            "by tango-event-monitor -o FILE: give that file"
        )
    if not recording.exists():
        raise RecordingError(
            f"{recording} does not exist; expected the JSON Lines file of a recording made "
            "by tango-event-monitor -o FILE: check the name"
        )
    if output.exists() and os.path.samefile(recording, output):
        raise RecordingError(
            f"the report would overwrite the recording {recording}; give another output "
            "with -o REPORT.html"
        )
    if output.is_dir():
        raise OutputError(
            f"cannot write the report to {output}: it is a directory; give a file name "
            "such as -o REPORT.html"
        )
    if output.exists() and not output.is_file():
        raise OutputError(
            f"cannot write the report to {output}: it is not a regular file (a device, a "
            "pipe or a socket), and the report would replace it; give a file name such as "
            "-o REPORT.html"
        )
    directory = _target(output).parent
    if not directory.is_dir():
        raise OutputError(
            f"cannot write the report to {output}: the directory {directory} does not "
            "exist; create it, or give a file in a directory that exists with -o REPORT.html"
        )


def _target(output: Path) -> Path:
    """The file that ``output`` names: the end of its symbolic links, if it is one."""
    return Path(os.path.realpath(output)) if output.is_symlink() else output


class _Replacement:
    """A temporary file beside the file ``output`` names, made on entry (so a directory
    that refuses it is found before any work), renamed over that file by `commit`, and
    removed on exit if it was not, whatever happened.  Raises `OutputError`."""

    def __init__(self, output: Path) -> None:
        self._output = output
        target = _target(output)
        self._target = target
        self._temporary = target.with_name(
            f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        self._descriptor = -1

    def __enter__(self) -> _Replacement:
        try:
            self._descriptor = os.open(
                self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
            )
        except OSError as error:
            raise OutputError(
                f"cannot write the report to {self._output}: cannot create a file in "
                f"{self._target.parent} ({error.strerror or error}); give a file in a "
                "directory this user may write to with -o REPORT.html"
            ) from None
        return self

    def commit(self, data: bytes) -> None:
        """Put ``data`` in the temporary file and rename it over the output."""
        descriptor, self._descriptor = self._descriptor, -1
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(self._temporary, self._target)
        except OSError as error:
            raise OutputError(
                f"cannot write the report to {self._output} ({error.strerror or error}); "
                "give a file in a directory this user may write to, on a disk with room, "
                "with -o REPORT.html"
            ) from None

    def __exit__(self, *exception: object) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
        self._temporary.unlink(missing_ok=True)
