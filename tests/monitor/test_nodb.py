"""Device servers run without a database (``-nodb``), named by ``...#dbase=no`` TRLs."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from milonga.monitor import MonitoredServer, MonitorSetupError, parse_snapshot, resolve_servers
from milonga.testing import wait_until
from tests.monitor.test_cli_tango import MONITOR, WAIT_SECONDS, environment, split_snapshots

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")

DEVICE = "test/nodb/counter"
DEVICES = Path(__file__).parents[1] / "devices"
STARTUP_SECONDS = 60.0  # a safety net: a device server starts in a second or two
# Stopped by the kernel (PR_SET_PDEATHSIG) if the test run dies without stopping it.
RUN_COUNTER = (
    "import ctypes, signal, sys, tango.server; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
    "sys.path.insert(0, sys.argv[1]); from counter import Counter; "
    "tango.server.run([Counter], args=['Counter', 'nodb', '-nodb', '-dlist', sys.argv[2], "
    "'-ORBendPoint', f'giop:tcp:127.0.0.1:{sys.argv[3]}'])"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(trl: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        pytest.fail(f"the -nodb server exited with status {server.returncode}")
    try:
        tango.DeviceProxy(trl).ping()  # a new proxy: no 1 s delay after a failed attempt
    except tango.DevFailed:
        return False
    return True


@pytest.fixture(scope="module")
def nodb_port() -> Iterator[int]:
    """The port of a Counter server running without a database."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", RUN_COUNTER, str(DEVICES), DEVICE, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: _answers(f"tango://127.0.0.1:{port}/{DEVICE}#dbase=no", server),
            "the -nodb server to answer",
            timeout=STARTUP_SECONDS,
        )
        yield port
    finally:
        server.terminate()
        try:
            server.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_device_and_its_admin_without_database_are_one_server(nodb_port: int) -> None:
    prefix = f"tango://127.0.0.1:{nodb_port}/"
    device = f"{prefix}{DEVICE}#dbase=no"

    servers = resolve_servers(
        [device, f"tango://localhost:{nodb_port}/dserver/counter/NODB#DBASE=NO"]
    )

    assert servers == [MonitoredServer(f"{prefix}dserver/Counter/nodb#dbase=no", (device,))]


def test_the_monitor_polls_a_server_without_database(nodb_port: int) -> None:
    device = f"tango://127.0.0.1:{nodb_port}/{DEVICE}#dbase=no"
    admin = f"tango://127.0.0.1:{nodb_port}/dserver/Counter/nodb#dbase=no"

    result = subprocess.run(
        [*MONITOR, device, "--count", "1", "--monitor"],
        env=environment(None),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    (snapshot,) = split_snapshots(result.stdout.splitlines())
    assert f"{admin} (from {device})" in snapshot[1]
    assert "- No answer" not in snapshot
    assert parse_snapshot(tango.DeviceProxy(admin).QueryEventSystem()).perf_monitoring is False


def test_a_server_without_database_must_be_running() -> None:
    device = f"tango://127.0.0.1:{_free_port()}/{DEVICE}#dbase=no"

    with pytest.raises(MonitorSetupError, match="runs without a Tango database") as raised:
        resolve_servers([device])

    assert "start it before the monitor" in str(raised.value)
