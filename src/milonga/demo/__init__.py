"""The missing-event control system and the `milonga demo` runner.

`run_demo` starts the control system of `milonga.demo.devices` in a sandbox, watches a
scan with the event monitor and prints a diagnosis computed from its snapshots
(`milonga.demo.diagnosis`).
"""

from milonga.demo.live import DemoError
from milonga.demo.runner import DemoOptions, run_demo

__all__ = ["DemoError", "DemoOptions", "run_demo"]
