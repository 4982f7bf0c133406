"""The Tango edge of the monitor: finding servers, querying them all at once, perf on/off.

Everything else in `milonga.monitor` is pure; this module is the part that talks to Tango.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import tango

from milonga.monitor.poll import MonitoredServer, Poll, Reply
from milonga.monitor.snapshot import Snapshot, parse_snapshot
from milonga.tango_errors import describe_failure, root_cause

QUERY_COMMAND = "QueryEventSystem"
PERF_COMMAND = "EnableEventSystemPerfMon"
REQUIRED_TANGO = "cppTango 10.0 or newer (PyTango 10.0 or newer)"
DEFAULT_TIMEOUT_SECONDS = 3.0
MAX_WORKERS = 32

_T = TypeVar("_T")
_TRL = re.compile(
    r"^(?P<prefix>tango://(?P<host>[^:/]+):(?P<port>\d+)/)(?P<name>.*)$", re.IGNORECASE
)


class MonitorSetupError(Exception):
    """The monitor cannot start as asked; the message says what was wrong and what to do."""


def check_query_support(server: MonitoredServer, commands: Iterable[str]) -> None:
    """Raise `MonitorSetupError` unless ``commands`` include `QUERY_COMMAND`."""
    if QUERY_COMMAND.lower() not in {command.lower() for command in commands}:
        raise MonitorSetupError(
            f"{server.label} cannot be monitored: its device server has no {QUERY_COMMAND} "
            f"command, which needs {REQUIRED_TANGO}; upgrade that server or leave it out"
        )


def resolve_servers(names: Sequence[str]) -> list[MonitoredServer]:
    """The device servers of ``names`` (devices, aliases, admin devices or TRLs), each once.

    Devices of one server make one entry that lists them.  Only the Tango database is
    asked, so the servers need not be running, nor answering.  Raises `MonitorSetupError`
    for names the database does not know, or a database out of reach.
    """
    if not names:
        raise MonitorSetupError("no device given; name at least one device or admin device")
    _check_tango_host(names)
    databases: dict[str, tango.Database] = {}
    admins: dict[str, tuple[str, list[str]]] = {}
    for name in names:
        admin, is_admin = _admin_of(name, databases)
        _, devices = admins.setdefault(admin.lower(), (admin, []))
        if not is_admin and name not in devices:
            devices.append(name)
    return [MonitoredServer(admin, tuple(devices)) for admin, devices in admins.values()]


def _check_tango_host(names: Sequence[str]) -> None:
    """cppTango prints its own message when TANGO_HOST is unset; say it once, clearly."""
    if all(_TRL.match(name) for name in names) or "TANGO_HOST" in os.environ:
        return
    home = os.environ.get("HOME")
    rc_files = [Path("/etc/tangorc")] + ([Path(home) / ".tangorc"] if home else [])
    if not any(path.is_file() for path in rc_files):
        raise MonitorSetupError(
            "TANGO_HOST is not set, so there is no database to look the devices up in; "
            "export TANGO_HOST=host:port, or give full names like tango://host:port/a/b/c"
        )


def _admin_of(name: str, databases: dict[str, tango.Database]) -> tuple[str, bool]:
    """The admin device serving ``name``, and whether ``name`` is that admin itself."""
    trl = _TRL.match(name)
    prefix = trl["prefix"] if trl else ""
    device = trl["name"] if trl else name
    where = prefix.rstrip("/") if trl else f"TANGO_HOST={os.environ.get('TANGO_HOST')}"
    if device.count("/") not in (0, 2) or "" in device.split("/"):
        raise MonitorSetupError(
            f"{name!r} is not a device name: expected domain/family/member, an alias, "
            "or tango://host:port/domain/family/member"
        )
    try:
        if prefix not in databases:
            databases[prefix] = (
                tango.Database(trl["host"], int(trl["port"])) if trl else tango.Database()
            )
        db = databases[prefix]
        if "/" not in device:
            device = db.get_device_from_alias(device)
        info = db.get_device_info(device)
    except tango.DevFailed as failure:
        raise MonitorSetupError(_setup_failure(name, where, failure)) from None
    return f"{prefix}dserver/{info.ds_full_name}", info.class_name == "DServer"


def _setup_failure(name: str, where: str, failure: tango.DevFailed) -> str:
    reasons = {error.reason for error in failure.args}
    if reasons & {"API_DeviceNotDefined", "DB_DeviceNotDefined"}:
        return (
            f"unknown device {name!r}: the Tango database ({where}) does not define it; "
            "check the name (domain/family/member, or an alias) and TANGO_HOST"
        )
    if reasons & {"API_CantConnectToDatabase", "API_TangoHostNotSet"}:
        return (
            f"cannot reach the Tango database ({where}) to look up {name!r}; "
            "check that TANGO_HOST names a running database server"
        )
    root = root_cause(failure)
    return f"cannot look up {name!r} in the Tango database ({where}): {root}"


def query_process() -> Snapshot:
    """The event system of this very process, publisher or pure client."""
    return parse_snapshot(tango.ApiUtil.instance().query_event_system())


def set_process_perf_monitoring(enabled: bool) -> None:
    """Turn this process's event-system performance sampling on or off."""
    tango.ApiUtil.instance().enable_event_system_perf_mon(enabled)


def query_server(device: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Snapshot:
    """The event system of the device server running ``device`` (or admin device).

    Raises `MonitorSetupError` for unknown devices and `tango.DevFailed` if the server
    does not answer.
    """
    (server,) = resolve_servers([device])
    return parse_snapshot(_admin_proxy(server, timeout).command_inout(QUERY_COMMAND))


def set_perf_monitoring(
    device: str, enabled: bool, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> None:
    """Turn performance sampling on or off in the device server running ``device``."""
    (server,) = resolve_servers([device])
    _admin_proxy(server, timeout).command_inout(PERF_COMMAND, enabled)


def _admin_proxy(server: MonitoredServer, timeout: float) -> tango.DeviceProxy:
    proxy = tango.DeviceProxy(server.admin)
    proxy.set_timeout_millis(round(timeout * 1000))
    return proxy


class Collector:
    """Queries several device servers at the same time, one worker thread per server.

    A poll takes about as long as the slowest server, not the sum of them.  A server that
    fails to answer gives an error `Reply`; it is asked again at the next poll, which is
    how a restarted server is picked up.  Use it as a context manager, or `close` it.
    """

    def __init__(
        self,
        servers: Sequence[MonitoredServer],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_workers: int | None = None,
    ) -> None:
        """``max_workers=1`` queries the servers one after another instead."""
        self.servers = tuple(servers)
        self.timeout = timeout
        # Made by the worker threads on first use: making one may wait for its server.
        self._proxies: dict[str, tango.DeviceProxy] = {}
        workers = max_workers or min(MAX_WORKERS, max(1, len(self.servers)))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="milonga-monitor")

    def check_support(self) -> list[MonitoredServer]:
        """Check that every answering server has `QUERY_COMMAND`; return those not answering.

        Raises `MonitorSetupError` for a server that answers without the command.
        """
        commands = self._each(lambda proxy: [c.cmd_name for c in proxy.command_list_query()])
        silent = []
        for server, result in zip(self.servers, commands, strict=True):
            if isinstance(result, tango.DevFailed):
                silent.append(server)
            else:
                check_query_support(server, result)
        return silent

    def poll(self) -> Poll:
        """Every server's `QueryEventSystem` reply, all asked at once."""
        time = datetime.now()
        answers = self._each(lambda proxy: str(proxy.command_inout(QUERY_COMMAND)))
        return Poll(
            time,
            tuple(
                Reply.failed(server, describe_failure(answer))
                if isinstance(answer, tango.DevFailed)
                else Reply.answered(server, answer)
                for server, answer in zip(self.servers, answers, strict=True)
            ),
        )

    def set_perf_monitoring(
        self, enabled: bool, servers: Iterable[MonitoredServer] | None = None
    ) -> dict[str, str]:
        """Turn performance sampling on or off; return the errors, by admin device."""
        wanted = {server.admin for server in (self.servers if servers is None else servers)}
        chosen = [server for server in self.servers if server.admin in wanted]

        def switch(proxy: tango.DeviceProxy) -> None:
            proxy.command_inout(PERF_COMMAND, enabled)

        results = self._each(switch, chosen)
        return {
            server.admin: describe_failure(result)
            for server, result in zip(chosen, results, strict=True)
            if isinstance(result, tango.DevFailed)
        }

    def close(self) -> None:
        """Wait for queries under way, then stop the worker threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Collector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _each(
        self,
        call: Callable[[tango.DeviceProxy], _T],
        servers: Sequence[MonitoredServer] | None = None,
    ) -> list[_T | tango.DevFailed]:
        """``call(proxy)`` for each server at once: each result, or the DevFailed it raised."""

        def guarded(server: MonitoredServer) -> _T | tango.DevFailed:
            try:
                return call(self._proxy(server))
            except tango.DevFailed as failure:
                return failure

        chosen = self.servers if servers is None else servers
        futures = [self._pool.submit(guarded, server) for server in chosen]
        return [future.result() for future in futures]

    def _proxy(self, server: MonitoredServer) -> tango.DeviceProxy:
        proxy = self._proxies.get(server.admin)
        if proxy is None:
            proxy = tango.DeviceProxy(server.admin)
            proxy.set_timeout_millis(round(self.timeout * 1000))
            self._proxies[server.admin] = proxy
        return proxy
