"""Entry point of every process a sandbox starts: a database server or a device server.

Run as ``python -m milonga.sandbox._child LIFELINE database ARGS...`` or
``python -m milonga.sandbox._child LIFELINE server SERVER SOURCE``, where ``LIFELINE`` is
the inherited read end of the sandbox's `Lifeline`.  Before anything else, and before
Tango is imported, the child starts watching it: once the sandbox process is gone,
however it ended, the child kills itself and whatever it started, so a crashed test run
never leaves Tango processes behind.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import runpy
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType

LOOPBACK_ENDPOINT = "giop:tcp:127.0.0.1:0"


def _die_with_parent(lifeline: int) -> None:
    """Block until the sandbox process is gone, then SIGKILL this process group.

    Nobody is left to wait for a graceful stop, and a graceful stop can hang on a
    database that is going away at the same time: the group is killed outright.
    """
    while os.read(lifeline, 1):  # the sandbox never writes: only end-of-file comes
        continue
    os.killpg(0, signal.SIGKILL)


def _watch_parent(lifeline: int) -> None:
    """Start `_die_with_parent` on a daemon thread."""
    threading.Thread(
        target=_die_with_parent, args=(lifeline,), name="milonga-parent-watchdog", daemon=True
    ).start()


def load_source(source: str) -> ModuleType:
    """Import ``source``: a path to a ``.py`` file or an importable module name."""
    if source.endswith(".py"):
        path = Path(source).resolve()
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"milonga sandbox: cannot load device source file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(source)


def run_device_server(server: str, source: str) -> None:
    """Run the device classes the database lists for ``server``, taken from ``source``."""
    # Imported only now, once the parent watch runs: importing Tango takes a while.
    import tango  # noqa: PLC0415
    import tango.server  # noqa: PLC0415

    executable, instance = server.split("/", 1)
    class_names = list(tango.Database().get_server_class_list(server))
    if not class_names:
        raise SystemExit(
            f"milonga sandbox: the database defines no device for server {server!r}; "
            "define one with TangoSandbox.add_device before starting the server"
        )
    module = load_source(source)
    missing = [name for name in class_names if not hasattr(module, name)]
    if missing:
        raise SystemExit(
            f"milonga sandbox: server {server!r} needs device classes {missing} "
            f"but {source!r} does not define them; define them there or fix add_device"
        )
    classes = [getattr(module, name) for name in class_names]
    tango.server.run(classes, args=[executable, instance, "-ORBendPoint", LOOPBACK_ENDPOINT])


def run_database(args: list[str]) -> None:
    """Run PyTango's own database server with ``args``."""
    sys.argv = ["tango.databaseds.database", *args]
    runpy.run_module("tango.databaseds.database", run_name="__main__", alter_sys=True)


def main(argv: list[str]) -> None:
    lifeline, mode, *rest = argv
    _watch_parent(int(lifeline))
    if mode == "database":
        run_database(rest)
    elif mode == "server":
        server, source = rest
        run_device_server(server, source)
    else:
        raise SystemExit(f"milonga sandbox: unknown child mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
