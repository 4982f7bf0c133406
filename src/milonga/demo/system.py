"""The demo's control system: which servers run which devices, and how long things take."""

from __future__ import annotations

from dataclasses import dataclass

from milonga.sandbox import TangoSandbox

DEVICES_MODULE = "milonga.demo.devices"
HW_SERVER = "MyServer/hw"
TOP_SERVER = "MyServer/top"
HW = "foo/bar/hw"
TOP = "foo/bar/top"
ROGUE = "foo/bar/rogue"


@dataclass(frozen=True)
class Timing:
    """The durations of one telling of the story."""

    scan_seconds: float
    """How long `HwDevice`'s scan pushes `position`."""
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
    scan_timeout_seconds=30.0,
    client_timeout_seconds=60.0,
    handler_seconds=0.3,
    polling_period=5.0,
    catch_up_seconds=90.0,
)
# The same story, shorter: the backlog (pushes x handler time) still outlasts the timeout.
QUICK = Timing(
    scan_seconds=4.0,
    scan_timeout_seconds=8.0,
    client_timeout_seconds=20.0,
    handler_seconds=0.3,
    polling_period=2.0,
    catch_up_seconds=30.0,
)


def start_system(sandbox: TangoSandbox, timing: Timing, *, use_scheduler: bool) -> None:
    """Define and start both servers; hw first, as the rogue subscribes to it at start."""
    sandbox.add_device(HW_SERVER, "HwDevice", HW, {"ScanSeconds": timing.scan_seconds})
    sandbox.add_device(
        TOP_SERVER,
        "TopDevice",
        TOP,
        {"TimeoutSeconds": timing.scan_timeout_seconds, "UseScheduler": use_scheduler},
    )
    sandbox.add_device(
        TOP_SERVER,
        "RogueDevice",
        ROGUE,
        {"HandlerSeconds": timing.handler_seconds, "UseScheduler": use_scheduler},
    )
    sandbox.start_server(HW_SERVER, DEVICES_MODULE)
    sandbox.start_server(TOP_SERVER, DEVICES_MODULE)


def remove_system(sandbox: TangoSandbox) -> None:
    """Stop both servers and forget their devices, so the system can be defined again."""
    sandbox.delete_server(TOP_SERVER)
    sandbox.delete_server(HW_SERVER)
