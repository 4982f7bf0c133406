"""TangoSandbox: PyTango's database server and device servers as child processes on 127.0.0.1."""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import signal
import site
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import tango

from milonga.sandbox._process import (
    ChildProcess,
    Lifeline,
    Reaper,
    close_private,
    open_private,
    read_log,
)
from milonga.sandbox.errors import SandboxError, ServerStartError
from milonga.terminated import STOP_SIGNALS, handling

DATABASE_START_SECONDS = 60.0
SERVER_START_SECONDS = 30.0
READY_POLL_SECONDS = 0.05
PING_TIMEOUT_MILLIS = 1000
PYTHON_VARIABLE = "MILONGA_SANDBOX_PYTHON"
LOCK_FILE = "milonga-sandbox.lock"
_LISTENING = re.compile(r"host=(?P<host>[\w.\-]+), port=(?P<port>\d+)")


@dataclass
class _RunningServer:
    source: str
    process: ChildProcess


class TangoSandbox:
    """A real, private Tango control system: database plus device servers, all on loopback.

    Use it as a context manager.  Entering starts the database and returns once it answers;
    leaving stops every process the sandbox started, whatever ended the block.

    The database and the device servers run on this process's Python interpreter, or on
    the one the environment variable ``MILONGA_SANDBOX_PYTHON`` names when it is set: the
    path or command name of an interpreter with PyTango 10.3 or later and whatever the
    device classes import.  That lets a client on an older PyTango, such as 9.5, use it.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._given_directory = sandbox_directory(directory) if directory is not None else None
        self._directory: Path | None = None
        self._directory_lock: int | None = None
        self._lifeline: Lifeline | None = None
        self._reaper: Reaper | None = None
        self._database: ChildProcess | None = None
        self._python = sys.executable
        self._port: int | None = None
        self._servers: dict[str, _RunningServer] = {}
        self._log_starts: dict[str, int] = {}
        self._servers_lock = threading.RLock()

    # -- lifetime ---------------------------------------------------------------------

    def __enter__(self) -> TangoSandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Take the directory, start the database server and wait until it answers.

        Raises SandboxError if another sandbox uses the directory: it holds a lock on
        it (the file ``milonga-sandbox.lock``) for as long as it or any of its processes
        runs.
        """
        if self._lifeline is not None:
            raise SandboxError("this sandbox is already running; stop() it before starting again")
        self._python = _child_python()
        try:
            self._take_directory()
            self._lifeline = Lifeline()
            if self._given_directory is None:
                self._reaper = Reaper(self.directory, self.directory / LOCK_FILE)
            self._start_database()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every device server, then the database.  Safe to call more than once.

        Called in the main thread, it ignores Ctrl-C, SIGTERM and SIGHUP until it is done
        (a few seconds at most), so that a second signal cannot leave processes or files
        behind.
        """
        with handling(dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)):
            self._stop()

    def _stop(self) -> None:
        with self._servers_lock:
            servers = list(self._servers)
        for server in reversed(servers):
            self.stop_server(server)
        if self._database is not None:
            self._database.stop()
            self._database = None
        self._port = None
        self._log_starts.clear()
        self._release_directory()

    def _release_directory(self) -> None:
        """Remove the directory if it is a temporary one, then free it for other sandboxes
        and tell the reaper (which then finds nothing left to remove)."""
        if self._given_directory is None and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._directory = None
        if self._directory_lock is not None:
            close_private(self._directory_lock)  # every process that shared it has ended
            self._directory_lock = None
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        if self._reaper is not None:
            self._reaper.wait()  # it finds the directory gone and ends
            self._reaper = None

    # -- addresses --------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """Where the SQLite file and the process logs live."""
        if self._directory is None:
            raise SandboxError("the sandbox is not running; use it inside a `with` block")
        return self._directory

    @property
    def port(self) -> int:
        if self._port is None:
            raise SandboxError("the sandbox is not running; use it inside a `with` block")
        return self._port

    @property
    def tango_host(self) -> str:
        """The value to export as TANGO_HOST to reach this sandbox, e.g. ``127.0.0.1:40123``."""
        return f"127.0.0.1:{self.port}"

    def trl(self, name: str) -> str:
        """The full Tango resource locator of device ``name`` (or of ``dev/attr``)."""
        if name.startswith("tango://"):
            return name
        return f"tango://{self.tango_host}/{name}"

    def proxy(self, name: str) -> tango.DeviceProxy:
        """A new ``tango.DeviceProxy`` to ``name`` through this sandbox's database."""
        return tango.DeviceProxy(self.trl(name))

    def database(self) -> Any:
        """A ``tango.Database`` client of this sandbox's database."""
        return tango.Database("127.0.0.1", self.port)

    # -- devices and servers ----------------------------------------------------------

    def add_device(
        self,
        server: str,
        device_class: str,
        name: str,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        """Define device ``name`` of ``device_class`` in ``server`` (``Executable/instance``)."""
        _check_server_name(server)
        info = tango.DbDevInfo()
        info.name = name
        info._class = device_class
        info.server = server
        db = self.database()
        db.add_device(info)
        if properties:
            db.put_device_property(name, {key: _as_property(v) for key, v in properties.items()})

    def delete_server(self, server: str) -> None:
        """Stop ``server`` if it runs and remove it, its devices and their properties from
        the database, so that a device defined later under the same name starts afresh."""
        self.stop_server(server)
        db = self.database()
        for device in self.devices_of(server):
            db.delete_device(device)  # Database.delete_server would leave the properties
        db.delete_server(server)

    def start_server(
        self, server: str, source: str | os.PathLike[str], timeout: float = SERVER_START_SECONDS
    ) -> None:
        """Start ``server`` running the classes defined in ``source`` and wait until it is up.

        ``source`` is an importable module name or a path to a ``.py`` file.  Returns once
        every device of the server is exported and answers ``ping()``.
        """
        self.start_servers({server: source}, timeout=timeout)

    def start_servers(
        self, sources: Mapping[str, str | os.PathLike[str]], timeout: float = SERVER_START_SECONDS
    ) -> None:
        """Start several servers at once and wait until all are up; see `start_server`."""
        launched = [self._launch(server, os.fspath(source)) for server, source in sources.items()]
        deadline = time.monotonic() + timeout
        for server in launched:
            self._wait_until_ready(server, deadline)

    def stop_server(self, server: str) -> None:
        """Stop ``server`` gracefully, killing it if it does not exit in time."""
        with self._servers_lock:
            running = self._servers.pop(server, None)
        if running is not None:
            running.process.stop()

    def restart_server(self, server: str, timeout: float = SERVER_START_SECONDS) -> None:
        """Stop ``server`` and start it again from the same source."""
        with self._servers_lock:
            running = self._servers.get(server)
        if running is None:
            raise SandboxError(
                f"server {server!r} is not running in this sandbox; start_server() it first"
            )
        self.stop_server(server)
        self.start_server(server, running.source, timeout=timeout)

    @property
    def servers(self) -> list[str]:
        """The servers this sandbox is running, in start order."""
        with self._servers_lock:
            return list(self._servers)

    def server_output(self, server: str) -> str:
        """Everything ``server`` has printed since the sandbox first started it (a log
        kept in a given directory also holds what earlier sandboxes' runs printed)."""
        with self._servers_lock:
            start = self._log_starts.get(server)
        return "" if start is None else read_log(self._log_path(server), start)

    def devices_of(self, server: str) -> list[str]:
        """The devices the database defines for ``server``, admin device first."""
        names = list(self.database().get_device_class_list(server))[0::2]
        return sorted(names, key=lambda name: not name.startswith("dserver/"))

    # -- internals --------------------------------------------------------------------

    def _take_directory(self) -> None:
        """Make the directory (a temporary one unless given) and lock it; see `start`."""
        if self._given_directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="milonga-sandbox-"))
        else:
            try:
                self._given_directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise SandboxError(
                    f"cannot use {self._given_directory} as the sandbox directory "
                    f"({error.strerror}); give a writable directory, or none for a temporary one"
                ) from None
            self._directory = self._given_directory
        self._directory_lock = _lock_directory(self._directory)

    def _start_database(self) -> None:
        env = self._child_env()
        env.pop("TANGO_HOST", None)
        database = ChildProcess(
            "database",
            ["database", "--host", "127.0.0.1", "--port", "0", "--print-host-port", "2"],
            self.directory / "database.log",
            env=env,
            lifeline=self._running_lifeline,
            inherited=self._inherited,
            python=self._python,
        )
        self._database = database
        deadline = time.monotonic() + DATABASE_START_SECONDS
        what = "the Tango database server"
        _poll(
            database,
            what,
            deadline,
            lambda: _LISTENING.search(database.output()) is not None,
            self._logs_kept,
        )
        listening = _LISTENING.search(database.output())
        assert listening is not None
        self._port = int(listening["port"])
        _poll(database, what, deadline, self._database_answers, self._logs_kept)

    @property
    def _running_lifeline(self) -> Lifeline:
        if self._lifeline is None:
            raise SandboxError("the sandbox is not running; use it inside a `with` block")
        return self._lifeline

    @property
    def _inherited(self) -> tuple[int, ...]:
        """What every child inherits besides the lifeline: the directory's lock."""
        return () if self._directory_lock is None else (self._directory_lock,)

    @property
    def _logs_kept(self) -> bool:
        """Whether the logs outlive the sandbox: only in a directory the caller gave."""
        return self._given_directory is not None

    def _database_answers(self) -> bool:
        try:
            self.database().get_info()
        except tango.DevFailed:
            return False
        return True

    def _launch(self, server: str, source: str) -> str:
        _check_server_name(server)
        if source.endswith(".py"):
            path = Path(source).resolve()
            if not path.is_file():
                raise SandboxError(
                    f"device source file {path} does not exist; pass the path of a .py file "
                    "defining the device classes, or an importable module name"
                )
            source = str(path)
        with self._servers_lock:
            if server in self._servers:
                raise SandboxError(
                    f"server {server!r} is already running; stop_server() or restart_server() it"
                )
            process = ChildProcess(
                server,
                ["server", server, source],
                self._log_path(server),
                env=self._child_env(),
                lifeline=self._running_lifeline,
                inherited=self._inherited,
                python=self._python,
            )
            self._servers[server] = _RunningServer(source, process)
            self._log_starts.setdefault(server, process.log_start)
        return server

    def _wait_until_ready(self, server: str, deadline: float) -> None:
        process = self._servers[server].process
        db = self.database()
        try:
            for device in self.devices_of(server):
                _poll(
                    process,
                    f"device server {server!r}",
                    deadline,
                    functools.partial(self._answers, db, device, process.pid),
                    self._logs_kept,
                )
        except ServerStartError:
            self.stop_server(server)
            raise

    def _answers(self, db: tango.Database, device: str, pid: int) -> bool:
        """Whether ``device`` is exported by process ``pid`` and answers a ping."""
        try:
            info = db.get_device_info(device)
            if not info.exported or info.pid != pid:
                return False
            proxy = self.proxy(device)
            proxy.set_timeout_millis(PING_TIMEOUT_MILLIS)
            proxy.ping()
        except tango.DevFailed:
            return False
        return True

    def _log_path(self, server: str) -> Path:
        return self.directory / "logs" / f"{server.replace('/', '.')}.log"

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Whatever this process can import, the child can import too, except this
        # interpreter's own libraries: the child's interpreter brings its own.
        libraries = _interpreter_libraries()
        importable = [Path(entry or os.curdir).resolve() for entry in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(
            str(entry)
            for entry in importable
            if entry.is_dir() and not any(entry.is_relative_to(lib) for lib in libraries)
        )
        if self._port is not None:
            env["TANGO_HOST"] = self.tango_host
        env["PYTHONUNBUFFERED"] = "1"
        return env


def sandbox_directory(directory: str | os.PathLike[str]) -> Path:
    """``directory`` as a path, or SandboxError if it is the empty string, which would
    silently mean the current directory."""
    if not os.fspath(directory):
        raise SandboxError(
            "got an empty directory name for the sandbox; give the directory to keep the "
            "database and logs in (use '.' for the current one), or none for a temporary one"
        )
    return Path(directory)


def _lock_directory(directory: Path) -> int:
    """Lock ``directory`` for this sandbox; return the lock's file descriptor.

    The lock is an exclusive ``flock`` on ``LOCK_FILE``, whose text is the process id of
    the sandbox that holds it; the sandbox's children share it, forked copies of this
    process do not.  Raises SandboxError if another sandbox holds it.
    """
    path = directory / LOCK_FILE
    try:
        (lock,) = open_private(lambda: (os.open(path, os.O_RDWR | os.O_CREAT, 0o644),))
    except OSError as error:
        raise SandboxError(
            f"cannot use {directory} as the sandbox directory: cannot create {path} "
            f"({error.strerror}); give a writable directory, or none for a temporary one"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(lock, 32).decode(errors="replace").strip()
        close_private(lock)
        raise SandboxError(
            f"{directory} is in use by another sandbox (process {holder or 'unknown'}), "
            "and two sandboxes must not share a database; stop that one first, or give "
            "another directory"
        ) from None
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    return lock


def _child_python() -> str:
    """The interpreter the sandbox's processes run on; see `TangoSandbox`."""
    python = os.environ.get(PYTHON_VARIABLE)
    if not python:
        return sys.executable
    found = shutil.which(python)
    if found is None:
        raise SandboxError(
            f"{PYTHON_VARIABLE}={python!r} is not an executable; set it to a Python interpreter "
            "with PyTango 10.3 or later, or unset it to run the sandbox's processes on this one"
        )
    return found


def _interpreter_libraries() -> list[Path]:
    """This interpreter's standard library and site-packages directories."""
    paths = sysconfig.get_paths()
    directories = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    directories += [*site.getsitepackages(), site.getusersitepackages()]
    return [Path(directory).resolve() for directory in directories]


def _poll(
    process: ChildProcess,
    what: str,
    deadline: float,
    ready: Callable[[], bool],
    logs_kept: bool,
) -> None:
    """Wait until ``ready()``; raise ServerStartError if ``process`` exits or time runs out."""
    log = f"full log: {process.log_path}"
    if not logs_kept:
        log += ", removed when the sandbox stops; give TangoSandbox a directory to keep it"
    while not ready():
        code = process.exit_code()
        if code is not None:
            raise ServerStartError(
                f"{what} exited with status {code} before it was ready",
                f"Its output ({log}) ends with",
                process.tail(),
            )
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{what} did not become ready in time",
                f"Check its output below; if the machine is just slow, pass a longer "
                f"timeout ({log})",
                process.tail(),
            )
        time.sleep(READY_POLL_SECONDS)


def _check_server_name(server: str) -> None:
    executable, _, instance = server.partition("/")
    if not executable or not instance or "/" in instance:
        raise SandboxError(
            f"server name {server!r} is not of the form 'Executable/instance'; "
            "use for example 'MyServer/hw'"
        )


def _as_property(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [str(value)]
    return [str(item) for item in value]
