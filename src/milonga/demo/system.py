"""The demo's control system: which servers run which devices, and how long things take."""

from __future__ import annotations

from milonga.demo.errors import DemoError
from milonga.demo.timing import Timing
from milonga.sandbox import SandboxError, ServerStartError, TangoSandbox

DEVICES_MODULE = "milonga.demo.devices"
HW_SERVER = "MyServer/hw"
TOP_SERVER = "MyServer/top"
HW = "foo/bar/hw"
TOP = "foo/bar/top"
ROGUE = "foo/bar/rogue"


CANNOT_START = (
    "The demo runs PyTango's database server and two device servers as child processes on "
    "127.0.0.1, on this Python or on the one MILONGA_SANDBOX_PYTHON names. Check that it has "
    "PyTango 10.3 or later and that the machine is not overloaded, then try again; if it "
    "still fails, report it with this message."
)


def start_system(sandbox: TangoSandbox, timing: Timing, *, use_scheduler: bool) -> None:
    """Define and start both servers; hw first, as the rogue subscribes to it at start.

    Raises `DemoError` if a server does not start.
    """
    sandbox.add_device(
        HW_SERVER,
        "HwDevice",
        HW,
        {"ScanSeconds": timing.scan_seconds, "PushHz": timing.push_hz},
    )
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
    try:
        sandbox.start_server(HW_SERVER, DEVICES_MODULE)
        sandbox.start_server(TOP_SERVER, DEVICES_MODULE)
    except SandboxError as error:
        raise cannot_start("the demo's control system", error) from None


def cannot_start(what: str, error: SandboxError) -> DemoError:
    """The error to report when ``what`` did not start because of ``error``.

    For a server that failed to start, the demo shows what failed and the last line the
    server printed, usually its own error, rather than the whole tail of its log.
    """
    if isinstance(error, ServerStartError):
        output = error.output.strip().splitlines()
        shown = error.problem + (f"\n    {output[-1]}" if output else "")
    else:
        shown = str(error)
    return DemoError(f"{what} did not start: {shown}\n{CANNOT_START}")


def remove_system(sandbox: TangoSandbox) -> None:
    """Stop both servers and forget their devices, so the system can be defined again."""
    sandbox.delete_server(TOP_SERVER)
    sandbox.delete_server(HW_SERVER)
