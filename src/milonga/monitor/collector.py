"""The Tango edge of the monitor: finding servers, querying them all at once, perf on/off.

Everything else in `milonga.monitor` is pure; this module is the part that talks to Tango.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import tango

from milonga.monitor.poll import MonitoredServer, Poll, Reply
from milonga.monitor.snapshot import Snapshot, parse_snapshot
from milonga.scheduler.streams import device_trl
from milonga.tango_errors import describe_failure, root_cause

QUERY_COMMAND = "QueryEventSystem"
PERF_COMMAND = "EnableEventSystemPerfMon"
REQUIRED_TANGO = "cppTango 10.0 or newer (PyTango 10.0 or newer)"
DEFAULT_TIMEOUT_SECONDS = 1.0
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

    Devices of one server make one entry that lists them, however they are spelled: bare
    names are in the TANGO_HOST database, and a database host is the same whatever name
    or address gives it.  The entry's admin device is spelled as the first name of that
    server was.  Only the Tango database is asked, so the servers need not be running,
    nor answering.  Raises `MonitorSetupError` for names the database does not know, or
    a database out of reach.
    """
    if not names:
        raise MonitorSetupError("no device given; name at least one device or admin device")
    _check_tango_host(names)
    databases: dict[str, tango.Database] = {}
    admins: dict[str, tuple[str, list[str]]] = {}
    for name in names:
        admin, key, is_admin = _admin_of(name, databases)
        _, devices = admins.setdefault(key, (admin, []))
        if not is_admin and name not in devices:
            devices.append(name)
    return [MonitoredServer(admin, tuple(devices)) for admin, devices in admins.values()]


def server_key(db_host: str, db_port: str | int, admin: str) -> str:
    """The one name of admin device ``admin`` of the database at ``db_host:db_port``.

    ``tango://address:port/dserver/executable/instance``, lower case, with the host's IP
    address: every spelling of one server gives the same key.
    """
    return device_trl(f"tango://{db_host}:{db_port}/{admin}")


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


def _admin_of(name: str, databases: dict[str, tango.Database]) -> tuple[str, str, bool]:
    """The admin device serving ``name``, its `server_key`, and whether it is ``name``."""
    trl = _TRL.match(name)
    prefix = trl["prefix"] if trl else ""
    device = trl["name"] if trl else name
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
        raise MonitorSetupError(_setup_failure(name, failure)) from None
    admin = f"dserver/{info.ds_full_name}"
    key = server_key(db.get_db_host(), db.get_db_port(), admin)
    return prefix + admin, key, info.class_name == "DServer"


def _setup_failure(name: str, failure: tango.DevFailed) -> str:
    """Why ``name`` could not be looked up, naming the database that was asked."""
    trl = _TRL.match(name)
    if trl:
        where, fix = f"{trl['host']}:{trl['port']}", "the host:port in the name"
    else:
        where, fix = (
            f"{os.environ.get('TANGO_HOST', 'your tangorc file')} (TANGO_HOST)",
            "TANGO_HOST",
        )
    reasons = {error.reason for error in failure.args}
    if reasons & {"API_DeviceNotDefined", "DB_DeviceNotDefined"}:
        return (
            f"unknown device {name!r}: the Tango database at {where} does not define it; "
            f"check the name (domain/family/member, or an alias) and {fix}"
        )
    if reasons & {"API_CantConnectToDatabase", "API_TangoHostNotSet"}:
        return (
            f"cannot reach the Tango database at {where} to look up {name!r}; "
            f"check that a Tango database server runs there, or fix {fix}"
        )
    root = root_cause(failure)
    return f"cannot look up {name!r} in the Tango database at {where}: {root}"


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
    return parse_snapshot(_admin_proxy(server.admin, timeout).command_inout(QUERY_COMMAND))


def set_perf_monitoring(
    device: str, enabled: bool, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> None:
    """Turn performance sampling on or off in the device server running ``device``."""
    (server,) = resolve_servers([device])
    _admin_proxy(server.admin, timeout).command_inout(PERF_COMMAND, enabled)


def _admin_proxy(admin: str, timeout: float | None) -> tango.DeviceProxy:
    """A proxy to ``admin``, whose calls give up after ``timeout`` seconds if given.

    Setting the timeout connects: see `Collector._proxy` for why it may be left unset.
    """
    proxy = tango.DeviceProxy(admin)
    if timeout is not None:
        proxy.set_timeout_millis(round(timeout * 1000))
    return proxy


@dataclass(frozen=True)
class NoAnswer:
    """A server whose call was still under way when the collector stopped waiting."""

    reason: str


class Collector:
    """Queries several device servers at the same time, one worker thread per server.

    A poll takes about as long as the slowest server, and never much more than
    ``timeout``: a server still busy then (frozen, say) gets an error `Reply`, and is not
    asked again before that call ends, so one server stuck in cppTango's 3 s reconnection
    attempts does not hold up the others.  A server that fails to answer is asked again
    at the next poll, which is how a restarted server is picked up.  Use it as a context
    manager, or `close` it.
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
        # Calls that outlived their wait, by admin device, with when they were sent.
        self._late: dict[str, tuple[float, Future[Any]]] = {}
        # The last failure of each server that says something about the server.
        self._failures: dict[str, tango.DevFailed] = {}
        # Servers whose proxy has our timeout; see `_proxy`.
        self._timed: set[str] = set()
        self._closing = threading.Event()
        self._workers = max_workers or min(MAX_WORKERS, max(1, len(self.servers)))
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="milonga-monitor")

    def check_support(self) -> list[MonitoredServer]:
        """Check that every answering server has `QUERY_COMMAND`; return those not answering.

        Raises `MonitorSetupError` for a server that answers without the command.
        """
        commands = self._each(lambda proxy: [c.cmd_name for c in proxy.command_list_query()])
        silent = []
        for server, result in zip(self.servers, commands, strict=True):
            if isinstance(result, list):
                check_query_support(server, result)
            else:
                silent.append(server)
        return silent

    def poll(self) -> Poll:
        """Every server's `QueryEventSystem` reply, all asked at once."""
        time = datetime.now()
        answers = self._each(lambda proxy: str(proxy.command_inout(QUERY_COMMAND)))
        return Poll(
            time,
            tuple(
                Reply.answered(server, answer)
                if isinstance(answer, str)
                else Reply.failed(server, _describe(answer))
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
            server.admin: _describe(result)
            for server, result in zip(chosen, results, strict=True)
            if isinstance(result, (tango.DevFailed, NoAnswer))
        }

    def close(self) -> None:
        """Stop the worker threads, once the Tango calls under way have ended.

        On a frozen server a call lasts up to ``timeout``, cppTango's 3 s reconnection and
        ``timeout`` again; calls not started yet are dropped.
        """
        self._closing.set()
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
    ) -> list[_T | tango.DevFailed | NoAnswer]:
        """``call(proxy)`` for each server at once: each result, or the DevFailed it raised.

        Waits at most ``timeout`` per turn of the workers (one turn when there are as
        many workers as servers): a server whose call is still under way then, or still
        under way from an earlier `_each`, gives `NoAnswer`, and is not called again.
        """

        def guarded(server: MonitoredServer) -> _T | tango.DevFailed | NoAnswer:
            try:
                proxy = self._proxy(server)
                if self._closing.is_set():
                    return NoAnswer("the monitor is closing")
                result = call(proxy)
                if server.admin not in self._timed:
                    proxy.set_timeout_millis(round(self.timeout * 1000))
                    self._timed.add(server.admin)
                return result
            except tango.DevFailed as failure:
                return self._telling(server, failure)

        chosen = self.servers if servers is None else servers
        now = time.monotonic()
        for admin, (_, late) in list(self._late.items()):
            if late.done():
                del self._late[admin]
        futures = {
            server.admin: self._pool.submit(guarded, server)
            for server in chosen
            if server.admin not in self._late
        }
        # With fewer workers than servers, calls wait their turn: each gets the timeout.
        turns = -(-len(futures) // self._workers)
        wait(futures.values(), timeout=self.timeout * turns)
        results: list[_T | tango.DevFailed | NoAnswer] = []
        for server in chosen:
            future = futures.get(server.admin)
            if future is not None and future.done():
                results.append(future.result())
                continue
            if future is not None:
                self._late[server.admin] = (now, future)
            sent = self._late[server.admin][0]
            results.append(
                NoAnswer(
                    f"no answer for {time.monotonic() - sent:.1f} s (the timeout is "
                    f"{self.timeout:g} s): its device server is frozen, overloaded or out "
                    "of reach; it is asked again once that call ends"
                )
            )
        return results

    def _telling(self, server: MonitoredServer, failure: tango.DevFailed) -> tango.DevFailed:
        """``failure``, or the server's previous one if cppTango just delayed reconnecting.

        cppTango refuses to reconnect within 1 s of its last attempt, which says nothing
        about the server: the failure of that last attempt is the reason to show.
        """
        delayed = any(
            error.reason == "API_CantConnectToDevice" and "delayed" in str(error.desc)
            for error in failure.args
        )
        if delayed:
            return self._failures.get(server.admin, failure)
        self._failures[server.admin] = failure
        return failure

    def _proxy(self, server: MonitoredServer) -> tango.DeviceProxy:
        """The server's proxy; ``timeout`` is set once a call has connected it.

        Setting it connects, and a failed connection makes cppTango refuse the next one
        for 1 s, hiding why it failed.  Until connected, calls end within cppTango's 3 s
        connection timeout anyway.
        """
        proxy = self._proxies.get(server.admin)
        if proxy is None:
            proxy = _admin_proxy(server.admin, None)
            self._proxies[server.admin] = proxy
        return proxy


def _describe(result: tango.DevFailed | NoAnswer) -> str:
    return result.reason if isinstance(result, NoAnswer) else describe_failure(result)
