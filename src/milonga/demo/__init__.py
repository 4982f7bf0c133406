"""The missing-event control system and the `milonga demo` runner.

`run_demo` starts the control system of `milonga.demo.devices` in a sandbox, watches a
scan with the event monitor's own loop (`milonga.demo.live`) and prints a diagnosis made
by the monitor's engine from its snapshots: the figures of the whole run, the rule's
verdict on them and the findings raised as it ran (`milonga.demo.figures`), their reading
(`milonga.demo.report`) and, with ``--fixed``, a before/after table
(`milonga.demo.comparison`).  With ``--record DIR`` it keeps every poll of its monitor in
``DIR``, as `tango-event-monitor -o FILE` does, for `milonga report`.
"""

from milonga.demo.errors import DemoError
from milonga.demo.runner import DemoOptions, run_demo

__all__ = ["DemoError", "DemoOptions", "run_demo"]
