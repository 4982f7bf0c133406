"""The missing-event control system and the `milonga demo` runner.

`run_demo` starts the control system of `milonga.demo.devices` in a sandbox, watches a
scan with the event monitor's own loop (`milonga.demo.live`) and prints a diagnosis made
by the monitor's engine from its snapshots: the figures of the whole run, the rule's
verdict on them and the findings raised as it ran (`milonga.demo.figures`), their reading
(`milonga.demo.report`) and, with ``--fixed``, a before/after table
(`milonga.demo.comparison`).  With ``--record DIR`` it keeps every poll of its monitor in
``DIR``, as `tango-event-monitor -o FILE` does, for `milonga report`.
"""

from typing import TYPE_CHECKING

from milonga._lazy import lazy_attributes
from milonga.demo.errors import DemoError

if TYPE_CHECKING:
    from milonga.demo.runner import DemoOptions, run_demo
else:  # the runner imports Tango: only when the demo runs
    __getattr__ = lazy_attributes(
        __name__, {"DemoOptions": "milonga.demo.runner", "run_demo": "milonga.demo.runner"}
    )

__all__ = ["DemoError", "DemoOptions", "run_demo"]
