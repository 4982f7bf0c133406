"""Record the polls of a real demo run, in the monitor's JSON Lines format, for the tests.

Run it from the repository root to refresh them: ``.venv/bin/python -m tests.demo.data.record``.
It tells the demo's story at its normal length, as `milonga demo --fixed` does, in about a
minute, and writes:

- ``plain.jsonl``: every poll of the run without the scheduler, where `Scan()` times out;
- ``fixed.jsonl``: every poll of the run with `CallbackScheduler` in both devices.

Each line is one poll, with the findings the monitor made of it, as
`tango-event-monitor -o FILE` writes it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from milonga.demo.live import Console
from milonga.demo.runner import tell
from milonga.demo.system import remove_system
from milonga.demo.timing import NORMAL
from milonga.monitor import JsonLinesWriter
from milonga.sandbox import TangoSandbox

HERE = Path(__file__).parent


def main() -> None:
    with TangoSandbox() as sandbox:
        os.environ["TANGO_HOST"] = sandbox.tango_host
        for name, use_scheduler in (("plain", False), ("fixed", True)):
            path = HERE / f"{name}.jsonl"
            with JsonLinesWriter(path) as record:
                scan, updates = tell(
                    sandbox,
                    NORMAL,
                    Console(io.StringIO()),
                    use_scheduler=use_scheduler,
                    live=False,
                    record=record,
                )
            print(f"{path}: {len(updates)} polls; Scan() took {scan.seconds:.1f} s, {scan.error}")
            remove_system(sandbox)


if __name__ == "__main__":
    main()
