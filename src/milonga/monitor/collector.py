"""The Tango edge of the monitor: finding servers, querying them all at once, perf on/off.

Everything else in `milonga.monitor` is pure; this module is the part that talks to Tango.
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import tango

from milonga.monitor.poll import MonitoredServer, Poll, Reply
from milonga.monitor.snapshot import Snapshot, parse_snapshot
from milonga.scheduler.streams import device_trl
from milonga.tango_errors import describe_failure, root_cause

QUERY_COMMAND = "QueryEventSystem"
PERF_COMMAND = "EnableEventSystemPerfMon"
REQUIRED_TANGO = "cppTango 10.0 or newer (PyTango 10.0 or newer)"
DEFAULT_TIMEOUT_SECONDS = 1.0
RECONNECT_SECONDS = 3.0
"""How long cppTango tries to reconnect to a server that stopped answering a call."""

_T = TypeVar("_T")
_TRL = re.compile(
    r"^(?P<prefix>tango://(?P<host>[^:/]+):(?P<port>\d+)/)(?P<name>[^#]*)(?P<nodb>#dbase=no)?$",
    re.IGNORECASE,
)
NO_DATABASE = "#dbase=no"
"""Ends the TRL of a device whose server runs without a database (``-nodb``)."""
PATTERN_CHARACTERS = frozenset("*?[")
"""A name holding one of these is a shell-style pattern (`fnmatch`) over device names."""
_NO_CAP = 1 << 16
"""`Collector`'s worker cap when none is given: threads are made only as calls need them,
one per server with a call under way, so this bound is never reached in practice."""


class MonitorSetupError(Exception):
    """The monitor cannot start as asked; the message says what was wrong and what to do."""


def check_query_support(server: MonitoredServer, commands: Iterable[str]) -> None:
    """Raise `MonitorSetupError` unless ``commands`` include `QUERY_COMMAND`."""
    if QUERY_COMMAND.lower() not in {command.lower() for command in commands}:
        raise MonitorSetupError(no_query_command(server))


def no_query_command(server: MonitoredServer) -> str:
    """Why ``server``, which has no `QUERY_COMMAND`, cannot be monitored, and what to do."""
    return (
        f"{server.label} cannot be monitored: its device server has no {QUERY_COMMAND} "
        f"command, which needs {REQUIRED_TANGO}; upgrade that server or leave it out"
    )


def resolve_servers(names: Sequence[str]) -> list[MonitoredServer]:
    """The device servers of ``names`` (devices, aliases, admin devices or TRLs), each once.

    Devices of one server make one entry that lists them, however they are spelled: bare
    names are in the TANGO_HOST database, and a database host is the same whatever name
    or address gives it.  The entry's admin device is spelled as the first name of that
    server was.  Only the Tango database is asked, so the servers need not be running,
    nor answering; but a TRL ending in ``#dbase=no`` names a server that runs without a
    database, and that server itself is asked.  Raises `MonitorSetupError` for names the
    database does not know, a database out of reach, or such a server not answering.
    """
    if not names:
        raise MonitorSetupError("no device given; name at least one device or admin device")
    return list(select_servers(names).servers)


@dataclass(frozen=True)
class Selection:
    """The servers that names, patterns and ``--all`` select, as `select_servers` found them."""

    servers: tuple[MonitoredServer, ...]
    unmatched: tuple[str, ...] = ()
    """The patterns that matched no exported device; they may match one later."""
    named: frozenset[str] = frozenset()
    """The admin devices of the servers that a name (not a pattern, nor ``everything``)
    selected: those must be monitored, whereas the others may be left out."""


def is_pattern(name: str) -> bool:
    """Whether ``name`` is a shell-style pattern rather than one device's name."""
    return not PATTERN_CHARACTERS.isdisjoint(name)


def select_servers(names: Sequence[str], *, everything: bool = False) -> Selection:
    """The device servers that ``names`` and ``everything`` select, each once.

    A name is a device, alias, admin device or TRL, as `resolve_servers` takes, or a
    shell-style pattern (see `is_pattern`, matched without regard to case, as Tango
    names are) over the devices exported in the database (TANGO_HOST's, or that of the
    pattern's ``tango://host:port/`` prefix): each matching device's server is selected,
    labelled with the pattern.  ``everything`` adds every device server exported in the
    TANGO_HOST database, labelled with its admin device alone.  Servers come in the order
    of the names, then those of ``everything``.

    Raises `MonitorSetupError` as `resolve_servers` does for a name; a pattern that
    matches nothing is not an error, but is listed in `Selection.unmatched`.
    """
    _check_tango_host(names, everything)
    databases: dict[str, tango.Database] = {}
    admins: dict[str, tuple[str, list[str]]] = {}
    unmatched: list[str] = []
    named: set[str] = set()  # server keys

    def add(admin: str, key: str, source: str | None) -> None:
        _, sources = admins.setdefault(key, (admin, []))
        if source is not None and source not in sources:
            sources.append(source)

    for name in names:
        if not is_pattern(name):
            admin, key, is_admin = _admin_of(name, databases)
            add(admin, key, None if is_admin else name)
            named.add(key)
            continue
        found = _matching_servers(name, databases)
        if not found:
            unmatched.append(name)
        for admin, key in found:
            add(admin, key, name)
    if everything:
        for admin, key in _matching_servers("dserver/*", databases):
            add(admin, key, None)
    return Selection(
        tuple(MonitoredServer(admin, tuple(sources)) for admin, sources in admins.values()),
        tuple(unmatched),
        frozenset(admins[key][0] for key in named),
    )


def _matching_servers(pattern: str, databases: dict[str, tango.Database]) -> list[tuple[str, str]]:
    """The admin device and `server_key` of the server of each exported device whose name
    matches ``pattern``, each server once; raises `MonitorSetupError` if the database
    cannot be asked."""
    _check_text(pattern)
    trl = _TRL.match(pattern)
    prefix = trl["prefix"] if trl else ""
    wanted = (trl["name"] if trl else pattern).lower()
    if trl and trl["nodb"]:
        raise MonitorSetupError(
            f"{pattern!r} is a pattern for a server without a database ({NO_DATABASE}); "
            "patterns are matched against a database's exported devices, so name that "
            "server's devices one by one"
        )
    found: dict[str, str] = {}
    try:
        db = _database(trl, databases)
        host, port = db.get_db_host(), db.get_db_port()
        for device in db.get_device_exported("*"):
            if not fnmatch.fnmatchcase(device.lower(), wanted):
                continue
            if device.lower().startswith("dserver/"):
                admin = device
            else:
                admin = f"dserver/{db.get_device_info(device).ds_full_name}"
            found.setdefault(server_key(host, port, admin), prefix + admin)
    except tango.DevFailed as failure:
        raise MonitorSetupError(_setup_failure(pattern, failure)) from None
    return [(admin, key) for key, admin in found.items()]


def server_key(db_host: str, db_port: str | int, admin: str) -> str:
    """The one name of admin device ``admin`` of the database at ``db_host:db_port``.

    ``tango://address:port/dserver/executable/instance``, lower case, with the host's IP
    address: every spelling of one server gives the same key.
    """
    return device_trl(f"tango://{db_host}:{db_port}/{admin}")


def _check_tango_host(names: Sequence[str], everything: bool = False) -> None:
    """cppTango prints its own message when TANGO_HOST is unset; say it once, clearly."""
    if "TANGO_HOST" in os.environ or (not everything and all(_TRL.match(n) for n in names)):
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
    _check_text(name)
    trl = _TRL.match(name)
    prefix = trl["prefix"] if trl else ""
    device = trl["name"] if trl else name
    if device.count("/") not in (0, 2) or "" in device.split("/"):
        raise MonitorSetupError(
            f"{name!r} is not a device name: expected domain/family/member, an alias, "
            f"tango://host:port/domain/family/member or that followed by {NO_DATABASE}"
        )
    if trl and trl["nodb"]:
        return _admin_without_database(name, trl)
    try:
        db = _database(trl, databases)
        if "/" not in device:
            device = db.get_device_from_alias(device)
        info = db.get_device_info(device)
    except tango.DevFailed as failure:
        raise MonitorSetupError(_setup_failure(name, failure)) from None
    admin = f"dserver/{info.ds_full_name}"
    key = server_key(db.get_db_host(), db.get_db_port(), admin)
    return prefix + admin, key, info.class_name == "DServer"


def _database(trl: re.Match[str] | None, databases: dict[str, tango.Database]) -> tango.Database:
    """The database at the host:port of ``trl``, TANGO_HOST's without one; made once per
    TRL prefix and kept in ``databases``.  Raises `tango.DevFailed` if it cannot be reached."""
    prefix = trl["prefix"] if trl else ""
    if prefix not in databases:
        databases[prefix] = (
            tango.Database(trl["host"], int(trl["port"])) if trl else tango.Database()
        )
    return databases[prefix]


def _check_text(name: str) -> None:
    """Refuse a name holding bytes that are not UTF-8, as a command line can give them."""
    try:
        name.encode()
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")  # the bytes of the command line
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "backslashreplace")
        raise MonitorSetupError(
            f"'{raw.decode('ascii', 'backslashreplace')}' is not a device name: it holds "
            "bytes that are not UTF-8 text; check the name, which Tango spells in ASCII"
        ) from None


def _admin_without_database(name: str, trl: re.Match[str]) -> tuple[str, str, bool]:
    """`_admin_of` for a device whose server runs without a database: only that server can
    tell which it is, so it must be running."""
    if "/" not in trl["name"]:
        raise MonitorSetupError(
            f"{name!r} names an alias, but aliases need a Tango database; give the device's "
            "domain/family/member name"
        )
    try:
        info = tango.DeviceProxy(name).info()
    except tango.DevFailed as failure:
        raise MonitorSetupError(
            f"cannot ask the device server of {name!r} which admin device it has: it runs "
            f"without a Tango database ({NO_DATABASE}), so only it can tell, and it did not "
            f"answer ({root_cause(failure)}); start it before the monitor, or fix the "
            "host:port in the name"
        ) from None
    admin = f"dserver/{info.server_id}{NO_DATABASE}"
    key = server_key(trl["host"], trl["port"], admin)
    return trl["prefix"] + admin, key, info.dev_class == "DServer"


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


def process_reply(server: MonitoredServer) -> Reply:
    """This process's event system as a poll's reply under the name ``server`` (see
    `process_name`), or why it cannot be queried."""
    try:
        return Reply.answered(server, str(tango.ApiUtil.instance().query_event_system()))
    except tango.DevFailed as failure:
        return Reply.failed(server, describe_failure(failure))


def process_name() -> MonitoredServer:
    """How polls name this process: its admin device ``dserver/Executable/instance``
    once it runs a device server (``tango.Util`` exists), else ``client/<host>/<pid>``."""
    try:
        return MonitoredServer(f"dserver/{tango.Util.instance(False).get_ds_name()}")
    except tango.DevFailed:  # no device server runs in this process (yet)
        return MonitoredServer(f"client/{socket.gethostname()}/{os.getpid()}")


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
class CallError:
    """Why a call to one server gave no result."""

    reason: str
    """One Tango error per line, the root cause first; or how long no answer has come."""
    answered: bool = True
    """False when no answer came in time: the server is frozen, overloaded or out of
    reach, and may still carry the call out."""
    sent: bool = True
    """False when the call was not sent, as the server had not answered an earlier one."""

    def __str__(self) -> str:
        return self.reason


class _Line:
    """The way to one server: its proxy, and the one call under way on it, if any."""

    def __init__(self) -> None:
        self.proxy: tango.DeviceProxy | None = None
        self.timed = False
        """Whether the proxy has the collector's timeout; see `Collector._proxy`."""
        self.sent: float | None = None
        """When the call under way was sent (`time.monotonic`); None when there is none."""
        self.failure: tango.DevFailed | None = None
        """The last failure that said something about the server; see `Collector._telling`."""


class Collector:
    """Queries several device servers at the same time, one worker thread per server.

    Each server has at most one call under way.  A poll waits about as long as the
    slowest server, and never much more than ``timeout``: a server still busy then
    (frozen, say) gets an error `Reply`, and is not asked again before that call ends, so
    servers stuck in cppTango's 3 s reconnection attempts, however many, hold up no
    other.  A server that fails to answer is asked again at the next poll, which is how a
    restarted server is picked up.  Use it as a context manager, or `close` it.

    The threads are not capped: the pool makes them only as calls need them, and a
    frozen server holds its own for up to `call_limit`, so a capped pool would let a
    few frozen servers hold up the others.  Process lookups (`processes`) have a thread
    of their own, as they only ask the databases.
    """

    def __init__(
        self,
        servers: Sequence[MonitoredServer],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_workers: int | None = None,
    ) -> None:
        """``max_workers=1`` queries the servers one after another instead: then a server
        that does not answer holds up those after it."""
        self.servers = tuple(servers)
        self.timeout = timeout
        self._lines = {server.admin: _Line() for server in self.servers}
        # Lines of servers gone with a call under way, or kept to turn sampling off.
        self._dropped: dict[str, _Line] = {}
        self._known: set[str] = set()  # admin devices known to have the query command or not
        self._lacking: set[str] = set()  # admin devices known to lack it
        # Guards the `_Line.sent` of every line, and is notified when a call ends.
        self._ended = threading.Condition()
        self._closing = threading.Event()
        self._workers = max_workers
        self._pool = ThreadPoolExecutor(
            max_workers or _NO_CAP, thread_name_prefix="milonga-monitor"
        )
        # Process lookups only ask the databases, one at a time, apart from the servers.
        self._lookups = ThreadPoolExecutor(1, thread_name_prefix="milonga-monitor-database")
        self._databases: dict[str, tango.Database] = {}  # used by the lookup thread only

    @property
    def call_limit(self) -> float:
        """The longest a call lasts: on a frozen server, the timeout, cppTango's
        reconnection and the timeout again (5.0 s measured with the 1 s timeout)."""
        return 2 * self.timeout + RECONNECT_SECONDS

    @property
    def _retry_limit(self) -> float:
        """The longest a call after one that failed lasts: cppTango reconnects first."""
        return self.timeout + RECONNECT_SECONDS

    def set_servers(self, servers: Sequence[MonitoredServer], *, keep: Iterable[str] = ()) -> None:
        """Poll ``servers`` from now on, in place of the servers so far.

        Servers are told apart by admin device: one polled already keeps its line (its
        proxy and any call under way) and takes its new label; a new one gets a line.  A
        server gone is no longer asked; a call still under way on it ends on its own and
        its result is not used (if it comes back before that, it finds that call under
        way, as if it had never gone).  The servers gone (now or before) whose admin
        devices ``keep`` names keep their lines, so that `set_perf_monitoring` can still
        turn sampling off in them, after any call under way.  Call it from the thread
        that polls, between two calls of the other methods.
        """
        kept = {**self._dropped, **self._lines}
        lines = {s.admin: kept.pop(s.admin) if s.admin in kept else _Line() for s in servers}
        wanted = set(keep)
        with self._ended:  # dropped before the swap: a worker finds its line in either
            self._dropped = {
                a: line for a, line in kept.items() if line.sent is not None or a in wanted
            }
        self.servers = tuple(servers)
        self._lines = lines

    def submit_lookup(self, lookup: Callable[[], _T]) -> Future[_T]:
        """Run ``lookup``, a call that asks only Tango databases, in the thread of the
        process lookups (see `processes`), after those already asked for.  `close` waits
        for it if it has started, and drops it otherwise."""
        return self._lookups.submit(lookup)

    def check_support(self) -> list[MonitoredServer]:
        """Check that every answering server has `QUERY_COMMAND`; return those not answering.

        Raises `MonitorSetupError` for a server that answers without the command.
        """
        silent, lacking = self.find_support(self.servers)
        if lacking:
            raise MonitorSetupError(no_query_command(lacking[0]))
        return silent

    def find_support(
        self, servers: Sequence[MonitoredServer]
    ) -> tuple[list[MonitoredServer], list[MonitoredServer]]:
        """Ask each of ``servers`` whether it has `QUERY_COMMAND`; return those that did
        not answer, and those that answered without it (also in `lacking` from now on)."""
        commands = self._each(
            lambda proxy: [c.cmd_name for c in proxy.command_list_query()], servers
        )
        silent, lacking = [], []
        for server, result in zip(servers, commands, strict=True):
            if not isinstance(result, list):
                silent.append(server)
                continue
            self._known.add(server.admin)
            try:
                check_query_support(server, result)
            except MonitorSetupError:
                lacking.append(server)
                self._lacking.add(server.admin)
        return silent, lacking

    @property
    def lacking(self) -> frozenset[str]:
        """The admin devices of the servers found to have no `QUERY_COMMAND` so far."""
        return frozenset(self._lacking)

    def poll(self) -> Poll:
        """Every server's `QueryEventSystem` reply, all asked at once.

        A server that answers with an error before it ever answered the query is asked
        whether it has the command at all (once it answers that): one without it gets the
        error `no_query_command` and is in `lacking` from then on.
        """
        time = datetime.now().astimezone()  # local time, with its UTC offset
        answers = self._each(lambda proxy: str(proxy.command_inout(QUERY_COMMAND)), self.servers)
        self._known.update(
            server.admin
            for server, answer in zip(self.servers, answers, strict=True)
            if isinstance(answer, str)
        )
        unknown = [
            server
            for server, answer in zip(self.servers, answers, strict=True)
            if isinstance(answer, CallError) and answer.answered and server.admin not in self._known
        ]
        lacking = {server.admin for server in self.find_support(unknown)[1]} if unknown else set()
        return Poll(
            time,
            tuple(
                Reply.answered(server, answer)
                if isinstance(answer, str)
                else Reply.failed(
                    server,
                    no_query_command(server) if server.admin in lacking else _in_poll(answer),
                )
                for server, answer in zip(self.servers, answers, strict=True)
            ),
        )

    def set_perf_monitoring(
        self,
        enabled: bool,
        servers: Iterable[MonitoredServer] | None = None,
        *,
        patience: float = 0.0,
    ) -> dict[str, CallError]:
        """Turn performance sampling on or off in ``servers`` (all by default); return
        the errors, by admin device.  ``servers`` may include servers gone whose lines
        `set_servers` kept.

        A server that does not answer in time, or is still busy with an earlier call,
        gives an error whose ``answered`` is False.  With ``patience``, such a server is
        asked again once its call under way has ended, within ``patience`` seconds: see
        `_each`.  With ``patience`` at least `call_limit`, every call to them has ended
        on return, so that `close` need not wait.
        """
        reachable = {**self._dropped, **self._lines}
        chosen = [s for s in (self.servers if servers is None else servers) if s.admin in reachable]
        results = self._each(_switch(enabled), chosen, patience=patience)
        return {
            server.admin: result
            for server, result in zip(chosen, results, strict=True)
            if isinstance(result, CallError)
        }

    def processes(self, servers: Iterable[MonitoredServer] | None = None) -> dict[str, str | None]:
        """The process running each of ``servers`` (all by default), by admin device, as
        its Tango database recorded it when the server started: ``pid N, started T``.

        A restarted server is another process.  Only the databases are asked, one lookup
        at a time in a thread of their own, so the servers' calls, frozen or not, play no
        part.  None where that cannot be told: the server runs without a database, or the
        database did not answer within ``timeout`` (a lookup still under way then is
        left to end on its own; those not started are dropped).
        """
        chosen = self.servers if servers is None else tuple(servers)
        futures = [self._lookups.submit(self._process_of, server) for server in chosen]
        wait(futures, timeout=self.timeout)
        for future in futures:
            future.cancel()  # only those not started yet
        return {
            server.admin: future.result() if future.done() and not future.cancelled() else None
            for server, future in zip(chosen, futures, strict=True)
        }

    def close(self) -> None:
        """Stop the worker threads, once the Tango calls under way have ended.

        On a frozen server a call lasts up to ``timeout``, cppTango's 3 s reconnection and
        ``timeout`` again; calls not started yet are dropped.
        """
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._lookups.shutdown(wait=True, cancel_futures=True)

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
        servers: Sequence[MonitoredServer],
        *,
        patience: float = 0.0,
    ) -> list[_T | CallError]:
        """``call(proxy)`` for each of ``servers`` at once: each result, or why there is none.

        A server still busy with an earlier call is not called, and one that has not
        answered after ``timeout`` (per turn of the workers) is not waited for: both give
        a `CallError` whose ``answered`` is False.  With ``patience``, the calls under way
        to those are waited for, up to ``patience`` seconds, and each server is called
        again as soon as its call has ended, as long as a call sent then (which may have
        to reconnect) ends within ``patience`` too.
        """
        started = time.monotonic()
        deadline = started + patience
        last_call = deadline - self._retry_limit
        results = dict(zip((s.admin for s in servers), self._round(call, servers), strict=True))
        too_late: set[str] = set()  # free again, but a call now might outlast the patience
        while True:
            waiting = [
                server
                for server in servers
                if _not_answered(results[server.admin]) and server.admin not in too_late
            ]
            ready = self._wait_until_free(waiting, deadline) if waiting else []
            if not ready:
                break
            if time.monotonic() > last_call:
                too_late.update(server.admin for server in ready)
                continue
            results.update(zip((s.admin for s in ready), self._round(call, ready), strict=True))
        for server in servers:  # how long each has not answered, over every round
            result = results[server.admin]
            if isinstance(result, CallError) and not result.answered:
                line = self._line(server.admin)
                results[server.admin] = self._unanswered(line, started, sent=result.sent)
        return [results[server.admin] for server in servers]

    def _round(
        self, call: Callable[[tango.DeviceProxy], _T], servers: Sequence[MonitoredServer]
    ) -> list[_T | CallError]:
        """One call to each of ``servers``, waited for at most ``timeout`` per turn.

        A server with a call under way is not called, and takes no worker: the one worker
        per server is then busy with that call, and a call queued behind it would only
        run once it ends, unasked for.
        """
        started = time.monotonic()
        with self._ended:
            under_way = {server.admin: self._line(server.admin).sent for server in servers}
        futures = {
            server.admin: self._pool.submit(self._call_on, server, self._line(server.admin), call)
            for server in servers
            if under_way[server.admin] is None
        }
        # With fewer workers than servers, calls wait their turn: each gets the timeout.
        turns = -(-len(futures) // self._workers) if self._workers else 1
        wait(futures.values(), timeout=self.timeout * turns)
        results: list[_T | CallError] = []
        for server in servers:
            future = futures.get(server.admin)
            if future is None:
                sent = under_way[server.admin] or started
                results.append(self._unanswered(self._line(server.admin), sent, sent=False))
            elif future.done():
                results.append(future.result())
            else:
                results.append(self._unanswered(self._line(server.admin), started, sent=True))
        return results

    def _call_on(
        self, server: MonitoredServer, line: _Line, call: Callable[[tango.DeviceProxy], _T]
    ) -> _T | CallError:
        """``call(proxy)`` on ``server`` through its ``line``, in a worker thread, unless a
        call to it is under way already: the error then says since when."""
        with self._ended:
            if line.sent is not None:
                return self._unanswered(line, line.sent, sent=False)
            line.sent = time.monotonic()
        try:
            proxy = self._proxy(server)
            if self._closing.is_set():
                return CallError("the monitor is closing", sent=False)
            result = call(proxy)
            if not line.timed:
                proxy.set_timeout_millis(round(self.timeout * 1000))
                line.timed = True
            return result
        except tango.DevFailed as failure:
            return CallError(describe_failure(self._telling(line, failure)))
        finally:
            with self._ended:
                line.sent = None
                self._ended.notify_all()

    def _unanswered(self, line: _Line, since: float, *, sent: bool) -> CallError:
        """The error of the server of ``line``, which has not answered since ``since``, or
        since the call under way on ``line`` was sent if that was earlier."""
        with self._ended:
            under_way = line.sent
        waited = time.monotonic() - (since if under_way is None else min(since, under_way))
        return CallError(
            f"no answer for {waited:.1f} s (the timeout is {self.timeout:g} s): its device "
            "server is frozen, overloaded or out of reach",
            answered=False,
            sent=sent,
        )

    def _wait_until_free(
        self, servers: Sequence[MonitoredServer], deadline: float
    ) -> list[MonitoredServer]:
        """Wait until one of ``servers`` has no call under way, or ``deadline`` passes;
        return those with none, or nothing once ``deadline`` has passed."""

        def free() -> list[MonitoredServer]:
            return [server for server in servers if self._line(server.admin).sent is None]

        with self._ended:
            self._ended.wait_for(free, timeout=max(0.0, deadline - time.monotonic()))
            return free() if time.monotonic() < deadline else []

    def _line(self, admin: str) -> _Line:
        """The line of the server of ``admin``: polled, or gone but kept."""
        return self._lines.get(admin) or self._dropped[admin]

    def _telling(self, line: _Line, failure: tango.DevFailed) -> tango.DevFailed:
        """``failure``, or the server's previous one if cppTango just delayed reconnecting.

        cppTango refuses to reconnect within 1 s of its last attempt, which says nothing
        about the server: the failure of that last attempt is the reason to show.
        """
        delayed = any(
            error.reason == "API_CantConnectToDevice" and "delayed" in str(error.desc)
            for error in failure.args
        )
        if delayed:
            return line.failure or failure
        line.failure = failure
        return failure

    def _process_of(self, server: MonitoredServer) -> str | None:
        """The process running ``server`` as its database knows it, in the lookup thread;
        None if it runs without one, or the database fails."""
        trl = _TRL.match(server.admin)
        if trl and trl["nodb"]:
            return None
        try:
            database = _database(trl, self._databases)
            info = database.get_device_info(trl["name"] if trl else server.admin)
        except tango.DevFailed:
            return None
        return f"pid {info.pid}, started {info.started_date}"

    def _proxy(self, server: MonitoredServer) -> tango.DeviceProxy:
        """The server's proxy, kept in its line (that of a server gone while a call to it
        is under way, too); ``timeout`` is set once a call has connected it.

        Setting it connects, and a failed connection makes cppTango refuse the next one
        for 1 s, hiding why it failed.  Until connected, calls end within cppTango's 3 s
        connection timeout anyway.
        """
        line = self._line(server.admin)
        if line.proxy is None:
            line.proxy = _admin_proxy(server.admin, None)
        return line.proxy


def _switch(enabled: bool) -> Callable[[tango.DeviceProxy], None]:
    """The call that turns performance sampling on or off in a server."""

    def switch(proxy: tango.DeviceProxy) -> None:
        proxy.command_inout(PERF_COMMAND, enabled)

    return switch


def _not_answered(result: object) -> bool:
    return isinstance(result, CallError) and not result.answered


def _in_poll(error: CallError) -> str:
    """How ``error`` reads in a poll: a server that did not answer is asked again."""
    if error.answered:
        return error.reason
    return f"{error.reason}; it is asked again once that call has ended"
