"""Recorded polls to a report: `write_report` turns a recording of
``tango-event-monitor -o RUN.jsonl`` into one HTML file with plots that opens offline.

See docs/report.md.  Pure code, no Tango; the plots are drawn with matplotlib.
"""

from typing import TYPE_CHECKING

from milonga._lazy import lazy_attributes

if TYPE_CHECKING:
    from milonga.report.build import (
        OutputError,
        RecordingError,
        ReportError,
        Written,
        default_output,
        write_report,
    )

__all__ = [
    "OutputError",
    "RecordingError",
    "ReportError",
    "Written",
    "default_output",
    "write_report",
]

if not TYPE_CHECKING:  # matplotlib is imported when a report is made, not before
    __getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, "milonga.report.build"))
