"""TangoSandbox against real processes: start, stop, restart, failures and clean exits."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import tango

from milonga.sandbox import SandboxError, ServerStartError, TangoSandbox
from milonga.sandbox.sandbox import LOCK_FILE
from milonga.testing import SandboxServers, TangoEvents, wait_until

DEVICES = Path(__file__).parent / "devices"
COUNTER = "tests.devices.counter"
WAIT_SECONDS = 60.0  # a safety net only: every wait ends on a condition


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _listening_ports(processes: list[psutil.Process]) -> set[int]:
    return {
        conn.laddr.port
        for process in processes
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def _refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _assert_all_gone(processes: list[psutil.Process], ports: set[int]) -> None:
    assert processes, "the sandbox should have started processes"
    assert ports, "the sandbox should have been listening"
    assert not [p for p in processes if p.is_running()], "a sandbox process outlived it"
    assert all(_refuses_connections(port) for port in ports), "a port is still listening"


def test_server_devices_answer_with_their_properties(sandbox_servers: SandboxServers) -> None:
    sandbox_servers.add_device("Counters/props", "Counter", "test/props/1", {"Start": 41})
    sandbox_servers.add_device("Counters/props", "Counter", "test/props/2", {"Start": 7})
    sandbox_servers.start("Counters/props", COUNTER)

    first = sandbox_servers.sandbox.proxy("test/props/1")
    first.Increment()
    assert first.value == 42
    assert sandbox_servers.sandbox.proxy("test/props/2").value == 7


def test_proxy_reaches_the_sandbox_whatever_tango_host_says(
    sandbox_servers: SandboxServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_servers.add_device("Counters/host", "Counter", "test/host/1")
    sandbox_servers.start("Counters/host", COUNTER)
    monkeypatch.setenv("TANGO_HOST", "127.0.0.1:1")

    proxy = sandbox_servers.sandbox.proxy("test/host/1")

    assert proxy.value == 0
    sandbox = sandbox_servers.sandbox
    assert sandbox.trl("test/host/1") == f"tango://{sandbox.tango_host}/test/host/1"


def test_change_events_flow_over_loopback_only(
    sandbox_servers: SandboxServers, tango_events: TangoEvents
) -> None:
    sandbox_servers.add_device("Counters/events", "Counter", "test/events/1")
    sandbox_servers.start("Counters/events", "tests/devices/counter.py")
    proxy = sandbox_servers.sandbox.proxy("test/events/1")

    tango_events.subscribe(proxy, "value")
    proxy.Increment()
    proxy.Increment()
    tango_events.assert_event(proxy, "value", value=2)

    values = [event.value for event in tango_events.events(proxy, "value") if event.error is None]
    assert values == [0, 1, 2]
    servers = [p for p in _children() if "Counters/events" in p.cmdline()]
    addresses = {
        conn.laddr.ip
        for process in servers
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert addresses == {"127.0.0.1"}


def test_stop_then_restart_gives_a_fresh_server(sandbox_servers: SandboxServers) -> None:
    sandbox = sandbox_servers.sandbox
    sandbox_servers.add_device("Counters/restart", "Counter", "test/restart/1")
    sandbox_servers.start("Counters/restart", COUNTER)
    proxy = sandbox.proxy("test/restart/1")
    proxy.Increment()
    first_pid = sandbox.database().get_device_info("test/restart/1").pid

    sandbox.restart_server("Counters/restart")

    assert sandbox.database().get_device_info("test/restart/1").pid != first_pid
    assert not psutil.pid_exists(first_pid)
    assert proxy.value == 0, "a restarted server starts from its properties again"

    sandbox.stop_server("Counters/restart")

    assert "Counters/restart" not in sandbox.servers
    with pytest.raises(tango.DevFailed):
        proxy.ping()
    with pytest.raises(SandboxError, match="not running"):
        sandbox.restart_server("Counters/restart")


def test_server_crashing_at_start_reports_its_output(sandbox_servers: SandboxServers) -> None:
    sandbox_servers.add_device("Crashing/1", "Broken", "test/crash/1")

    with pytest.raises(ServerStartError) as failure:
        sandbox_servers.start("Crashing/1", DEVICES / "crashing.py")

    message = str(failure.value)
    assert "'Crashing/1' exited with status 1" in message
    assert "simulated hardware fault: cannot open /dev/ttyUSB7" in message
    assert "removed when the sandbox stops; give TangoSandbox a directory" in message
    assert failure.value.problem == (
        "device server 'Crashing/1' exited with status 1 before it was ready"
    )
    assert failure.value.output.rstrip().endswith("cannot open /dev/ttyUSB7")
    assert "Crashing/1" not in sandbox_servers.sandbox.servers


def test_server_that_never_comes_up_is_stopped_after_the_timeout(
    sandbox_servers: SandboxServers,
) -> None:
    sandbox_servers.add_device("Hanging/1", "Stuck", "test/hang/1")
    before = {p.pid for p in _children()}

    with pytest.raises(ServerStartError, match="did not become ready in time"):
        sandbox_servers.sandbox.start_server("Hanging/1", DEVICES / "hanging.py", timeout=2)

    assert {p.pid for p in _children()} == before
    assert "Hanging/1" not in sandbox_servers.sandbox.servers


def test_source_without_the_listed_class_names_it(sandbox_servers: SandboxServers) -> None:
    sandbox_servers.add_device("Mismatch/1", "NoSuchClass", "test/mismatch/1")

    with pytest.raises(ServerStartError, match=r"needs device classes \['NoSuchClass'\]"):
        sandbox_servers.start("Mismatch/1", COUNTER)


def test_bad_requests_are_refused_with_what_to_do(tango_sandbox: TangoSandbox) -> None:
    with pytest.raises(SandboxError, match="'Executable/instance'"):
        tango_sandbox.add_device("NoInstance", "Counter", "test/bad/1")
    with pytest.raises(SandboxError, match=r"does not exist; pass the path of a \.py file"):
        tango_sandbox.start_server("Missing/1", DEVICES / "no_such_file.py")


def test_per_test_servers_are_removed_from_the_database(tango_sandbox: TangoSandbox) -> None:
    servers = SandboxServers(tango_sandbox)
    servers.add_device("Counters/cleanup", "Counter", "test/cleanup/1")
    servers.start("Counters/cleanup", COUNTER)

    servers.cleanup()

    assert "Counters/cleanup" not in tango_sandbox.servers
    assert "Counters/cleanup" not in tango_sandbox.database().get_server_list("Counters/*")


def test_two_sandboxes_run_side_by_side() -> None:
    with TangoSandbox() as first, TangoSandbox() as second:
        for sandbox, start in ((first, 1), (second, 2)):
            sandbox.add_device("Twin/1", "Counter", "test/twin/1", {"Start": start})
            sandbox.start_server("Twin/1", COUNTER)

        assert first.tango_host != second.tango_host
        assert first.proxy("test/twin/1").value == 1
        assert second.proxy("test/twin/1").value == 2


def _started_since(before: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in _children() if p not in before]


def test_nothing_is_left_after_a_normal_exit() -> None:
    before = _children()
    with TangoSandbox() as sandbox:
        sandbox.add_device("Exit/1", "Counter", "test/exit/1")
        sandbox.start_server("Exit/1", COUNTER)
        processes = _started_since(before)
        ports = _listening_ports(processes)
        directory = sandbox.directory

    _assert_all_gone(processes, ports)
    assert not directory.exists(), "the temporary directory should be removed"


def test_nothing_is_left_after_an_exception() -> None:
    before = _children()
    processes: list[psutil.Process] = []
    ports: set[int] = set()

    def fail_inside_a_running_sandbox() -> None:
        with TangoSandbox() as sandbox:
            sandbox.add_device("Exit/2", "Counter", "test/exit/2")
            sandbox.start_server("Exit/2", COUNTER)
            processes.extend(_started_since(before))
            ports.update(_listening_ports(processes))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside_a_running_sandbox()

    _assert_all_gone(processes, ports)


def test_a_given_directory_keeps_database_and_logs(tmp_path: Path) -> None:
    with TangoSandbox(tmp_path) as sandbox:
        sandbox.add_device("Kept/1", "Counter", "test/kept/1")
        sandbox.start_server("Kept/1", COUNTER)
        # The server answers pings a moment before it prints that it is ready.
        wait_until(
            lambda: "Ready to accept request" in sandbox.server_output("Kept/1"),
            "the server to log that it is ready",
            WAIT_SECONDS,
        )

    assert (tmp_path / "tango_database.db").is_file()
    assert (tmp_path / "logs" / "Kept.1.log").is_file()


def test_a_given_directory_can_be_used_again(tmp_path: Path) -> None:
    sandbox = TangoSandbox(tmp_path)
    with sandbox:
        sandbox.add_device("Again/1", "Counter", "test/again/1", {"Start": 5})

    with sandbox:
        # the same SQLite file, reached at the port of this run's database
        assert sandbox.devices_of("Again/1") == ["dserver/Again/1", "test/again/1"]
        sandbox.start_server("Again/1", COUNTER)
        assert sandbox.proxy("test/again/1").value == 5


def test_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    with TangoSandbox(tmp_path) as first:
        second = TangoSandbox(tmp_path)
        with pytest.raises(SandboxError, match=r"is in use by another sandbox \(process \d+\)"):
            second.start()

        assert first.database().get_info()
        with pytest.raises(SandboxError, match="not running"):
            second.proxy("test/second/1")

    with TangoSandbox(tmp_path) as third:  # free again once the first has stopped
        assert third.database().get_info()


def test_an_empty_directory_name_is_refused() -> None:
    with pytest.raises(SandboxError, match="empty directory name"):
        TangoSandbox("")


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


ORPHANED_PROGRAM = textwrap.dedent(
    f"""
    import os, signal, sys
    from milonga.sandbox import TangoSandbox

    sandbox = TangoSandbox()
    sandbox.start()
    sandbox.add_device("Orphan/1", "Counter", "test/orphan/1")
    sandbox.start_server("Orphan/1", {COUNTER!r})
    print(sandbox.directory, flush=True)
    if sys.argv[1:] == ["fork"]:
        forked = os.fork()
        if forked == 0:  # lives on until its standard input closes
            os.read(0, 1)
            os._exit(0)
        print(forked, flush=True)
    signal.pause()
    """
)


@pytest.mark.parametrize("fork", [False, True], ids=["alone", "with-a-forked-child"])
def test_processes_and_directory_go_when_the_program_is_killed(fork: bool) -> None:
    program = subprocess.Popen(
        [sys.executable, "-c", ORPHANED_PROGRAM, *(["fork"] if fork else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    forked: list[psutil.Process] = []
    try:
        assert program.stdout is not None
        directory = Path(program.stdout.readline().strip())
        if fork:
            forked.append(psutil.Process(int(program.stdout.readline())))
        children = [
            p for p in psutil.Process(program.pid).children(recursive=True) if p not in forked
        ]
        assert directory.is_dir()
        assert len(children) >= 2, "a database and a device server"
    finally:
        os.kill(program.pid, signal.SIGKILL)
        program.wait()

    try:
        wait_until(lambda: not _alive(children), "the sandbox's processes to stop", WAIT_SECONDS)
        wait_until(lambda: not directory.exists(), "the temporary directory to go", WAIT_SECONDS)
        assert _alive(forked) == forked, "the forked child should outlive the program"
    finally:
        program.communicate()  # closes the forked child's standard input: it ends
        wait_until(lambda: not _alive(forked), "the forked child to end", WAIT_SECONDS)


@contextlib.contextmanager
def _forked_child() -> Iterator[None]:
    """A copy of this process made by os.fork(), as multiprocessing makes one, that lives
    until the block ends."""
    wait_fd, release_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(release_fd)
            os.read(wait_fd, 1)  # end-of-file once the parent closes release_fd
        finally:
            os._exit(0)
    os.close(wait_fd)
    try:
        yield
    finally:
        os.close(release_fd)
        os.waitpid(pid, 0)


def _lock_is_free(lock: int) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(lock, fcntl.LOCK_UN)
    return True


def test_a_forked_child_does_not_keep_a_stopped_sandbox_alive() -> None:
    sandbox = TangoSandbox()
    sandbox.start()
    try:
        directory = sandbox.directory
        lock = os.open(directory / LOCK_FILE, os.O_RDONLY)
        try:
            with _forked_child():
                sandbox.stop()
                # The reaper could take the lock and end by itself: nothing else holds it.
                assert _lock_is_free(lock), "the forked child holds the directory's lock"
                assert not directory.exists()
        finally:
            os.close(lock)
    finally:
        sandbox.stop()


def test_a_kept_directory_is_free_once_stopped_whatever_was_forked(tmp_path: Path) -> None:
    with TangoSandbox(tmp_path) as first, _forked_child():
        first.stop()

        with TangoSandbox(tmp_path) as second:  # at once, while the forked child lives
            assert second.database().get_info()
