"""From a recording to its report: read, analyse, draw, and write one HTML file.

The recording is streamed: each poll goes through `Analysis` and into the `Timeline` at
once, so no list of polls is kept.  The page is built whole in memory, then written to
a temporary file beside the output and renamed over it, so a report that fails or is
interrupted leaves neither a half-written page nor a temporary file.  Pure code, no Tango.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from milonga._version import __version__
from milonga.monitor.analysis import Analysis
from milonga.monitor.jsonl import RecordProblem, iter_polls
from milonga.report.page import PageFacts, render_page
from milonga.report.plots import findings_figure, server_figure
from milonga.report.timeline import Timeline


class ReportError(Exception):
    """A report cannot be made; the message says why and what to do."""


class RecordingError(ReportError):
    """The recording cannot be read, or holds no poll, or is the output itself."""


class OutputError(ReportError):
    """The report cannot be written where it was asked for."""


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
    """Write the HTML report of ``recording`` to ``output``, replacing it if it exists.

    ``warn`` gets each part of the recording that cannot be read (a message naming the
    line); the rest is reported, and the page lists them too.  Raises `RecordingError`
    if the recording cannot be read, holds no poll or is ``output`` itself, and
    `OutputError` if ``output`` cannot be written; a failure, or an interruption, leaves
    ``output`` as it was.
    """
    recording, output = Path(recording), Path(output)
    _check_paths(recording, output)
    warnings: list[str] = []

    def problem(found: RecordProblem) -> None:
        warnings.append(found.message)
        warn(found.message)

    timeline = read_timeline(recording, problem)
    facts = PageFacts(
        recording=str(recording),
        generated=datetime.now().astimezone(),
        version=__version__,
        warnings=tuple(warnings),
    )
    pictures = {
        admin: server_figure(timeline, server) for admin, server in timeline.servers.items()
    }
    page = render_page(timeline, facts, findings_figure(timeline), pictures).encode("utf-8")
    _write_atomically(output, page)
    return Written(output, timeline.polls, len(timeline.servers), len(page))


def read_timeline(recording: Path, problem: Callable[[RecordProblem], None]) -> Timeline:
    """The finished `Timeline` of ``recording``, read one poll at a time; each line that
    cannot be read goes to ``problem``.  Raises `RecordingError` if the file cannot be
    read or holds no poll."""
    timeline = Timeline()
    analysis = Analysis()
    try:
        for poll in iter_polls(recording, problems=problem):
            timeline.add(analysis.add(poll))
    except OSError as error:
        raise RecordingError(
            f"cannot read {recording} ({error.strerror or error}); give a recording made by "
            "tango-event-monitor -o FILE that this user may read"
        ) from None
    if not timeline.polls:
        raise RecordingError(
            f"{recording} holds no poll that can be read; expected the JSON Lines recording "
            "of tango-event-monitor -o FILE, one poll per line: record one, or give another file"
        )
    timeline.finish()
    return timeline


def _check_paths(recording: Path, output: Path) -> None:
    """Refuse a recording that is a directory or missing, and an output that is the
    recording or a directory."""
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


def _write_atomically(output: Path, data: bytes) -> None:
    """Put ``data`` in ``output`` through a temporary file in its directory, removed
    again whatever happens before the rename; raises `OutputError`."""
    temporary = output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise _output_error(output, error) from None
    try:
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(temporary, output)
        except OSError as error:
            raise _output_error(output, error) from None
    finally:
        temporary.unlink(missing_ok=True)


def _output_error(output: Path, error: OSError) -> OutputError:
    return OutputError(
        f"cannot write the report to {output} ({error.strerror or error}); give a file in "
        "a directory this user may write to, on a disk with room, with -o REPORT.html"
    )
