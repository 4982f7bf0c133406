"""How long the demo's story takes: `NORMAL`, and `QUICK` for `milonga demo --quick`.

Pure: the command line reads these before it imports Tango.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """The durations of one telling of the story."""

    scan_seconds: float
    """How long `HwDevice`'s scan pushes `position`."""
    push_hz: float
    """How many `position` events per second the scan pushes."""
    scan_timeout_seconds: float
    """How long `TopDevice.Scan()` waits for `Mode.IDLE`."""
    client_timeout_seconds: float
    """The demo's client timeout for `TopDevice.Scan()`."""
    handler_seconds: float
    """How long `RogueDevice` spends on each `position` event."""
    polling_period: float
    """The monitor's polling period."""
    catch_up_seconds: float
    """How long, after `Scan()`, the demo waits for every pushed event to arrive."""


NORMAL = Timing(
    scan_seconds=13.0,
    push_hz=10.0,
    scan_timeout_seconds=30.0,
    client_timeout_seconds=60.0,
    handler_seconds=0.3,
    polling_period=5.0,
    catch_up_seconds=90.0,
)
# The same story, shorter: the backlog (pushes x handler time) still outlasts the timeout.
QUICK = Timing(
    scan_seconds=4.0,
    push_hz=10.0,
    scan_timeout_seconds=8.0,
    client_timeout_seconds=20.0,
    handler_seconds=0.3,
    polling_period=2.0,
    catch_up_seconds=30.0,
)
