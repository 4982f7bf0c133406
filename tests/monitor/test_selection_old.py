"""Server selection with a device server too old to be monitored (no QueryEventSystem, as
before cppTango 10), and sampling in servers dropped while a call to them is under way.

The old server runs on the PyTango 9.5 interpreter of ``.venv-pytango9`` (`make test`
creates it); its tests are skipped, saying so, where that interpreter is absent.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from milonga.monitor import query_server
from milonga.monitor.cli import EXIT_OK, EXIT_USAGE, build_parser, run
from milonga.monitor.collector import Selection, select_servers
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers, wait_until
from tests.monitor.frozen import frozen
from tests.monitor.test_selection_tango import (
    FIRST,
    SECOND,
    Recorder,
    drop_second_while_frozen,
    following,
    pattern_lookup,
    start_second,
    two_servers,
)

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")

__all__ = ["two_servers"]  # the fixture, used by name

OLD_PYTHON = Path(__file__).resolve().parents[2] / ".venv-pytango9" / "bin" / "python"
OLD_SERVER, OLD_DEVICE = "OldSelect/1", "test/select/old"
OLD_ADMIN = f"dserver/{OLD_SERVER}"
OLD_SOURCE = """\
from tango.server import Device, attribute, run


class Old(Device):
    @attribute(dtype=int)
    def value(self):
        return 1


if __name__ == "__main__":
    run((Old,))
"""


@pytest.fixture
def start_old(two_servers: SandboxServers, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Define a device of a PyTango 9.5 server in the sandbox; yield what starts that
    server and waits until its device answers.  The server is killed at the end."""
    if not OLD_PYTHON.is_file():
        pytest.skip(f"no PyTango 9.5 interpreter at {OLD_PYTHON}: run 'make test' to create it")
    sandbox = two_servers.sandbox
    two_servers.add_device(OLD_SERVER, "Old", OLD_DEVICE)
    source = tmp_path / "oldselect.py"
    source.write_text(OLD_SOURCE)
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        command = [str(OLD_PYTHON), str(source), "1", "-ORBendPoint", "giop:tcp:127.0.0.1:0"]
        env = {**os.environ, "TANGO_HOST": sandbox.tango_host}
        log = (tmp_path / "old.log").open("wb")
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        wait_until(lambda: _answers(sandbox, OLD_DEVICE), "the PyTango 9.5 server up", 60)

    try:
        yield start
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _answers(sandbox: TangoSandbox, device: str) -> bool:
    try:
        sandbox.proxy(device).ping()
    except Exception:
        return False
    return True


def test_all_leaves_out_a_running_server_without_the_query_command(
    two_servers: SandboxServers,
    start_old: Callable[[], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = two_servers.sandbox
    start_old()
    monkeypatch.setenv("TANGO_HOST", sandbox.tango_host)
    output = tmp_path / "polls.jsonl"
    out, err = io.StringIO(), io.StringIO()
    arguments = ["--all", "--count", "1", "--quiet", "-o", str(output)]

    status = run(build_parser().parse_args(arguments), out=out, err=err)

    assert status == EXIT_OK, err.getvalue()
    assert err.getvalue().count(f"warning: leaving {OLD_ADMIN} out") == 1, err.getvalue()
    assert "cppTango 10.0 or newer" in err.getvalue()
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    polled = {admin.lower() for admin in record["replies"]}
    assert f"dserver/{FIRST}".lower() in polled
    assert OLD_ADMIN.lower() not in polled


def test_naming_a_server_without_the_query_command_is_an_error(
    two_servers: SandboxServers, start_old: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    start_old()
    monkeypatch.setenv("TANGO_HOST", two_servers.sandbox.tango_host)
    err = io.StringIO()

    status = run(
        build_parser().parse_args([OLD_DEVICE, "--count", "1"]), out=io.StringIO(), err=err
    )

    assert status == EXIT_USAGE
    assert f"error: {OLD_ADMIN} (from {OLD_DEVICE}) cannot be monitored" in err.getvalue()
    assert "no QueryEventSystem command" in err.getvalue()


def test_a_server_without_the_query_command_found_later_is_left_out_for_good(
    two_servers: SandboxServers, start_old: Callable[[], None]
) -> None:
    pattern = two_servers.sandbox.trl("test/select/*")
    lookups: list[Selection] = []

    def resolve() -> Selection:
        selection = select_servers([pattern])
        lookups.append(selection)
        return selection

    recorder = Recorder()
    with following(resolve().servers, resolve, recorder, required=lookups[0].named):
        wait_until(lambda: bool(recorder.updates), "a first poll")
        start_old()
        wait_until(
            lambda: any(OLD_ADMIN in text for text in recorder.warnings()),
            "the old server left out",
        )
        seen = len(lookups)
        # Two more lookups started: the first of them has been adopted.
        wait_until(lambda: len(lookups) >= seen + 2, "lookups after it was left out")

    warnings = [text for text in recorder.warnings() if OLD_ADMIN in text]
    assert len(warnings) == 1, warnings
    assert "no QueryEventSystem command" in warnings[0]
    assert all(
        not reply.server.admin.lower().endswith(OLD_ADMIN.lower())
        for update in recorder.updates
        for reply in update.poll.replies
    ), "the old server was never shown, not even as not answering"
    assert any(
        s.admin.lower().endswith(OLD_ADMIN.lower()) for sel in lookups for s in sel.servers
    ), "the lookups found it"


def test_sampling_is_turned_off_in_a_server_dropped_while_frozen(
    two_servers: SandboxServers,
) -> None:
    sandbox = two_servers.sandbox
    start_second(two_servers)
    first, second = sandbox.trl(f"dserver/{FIRST}"), sandbox.trl(f"dserver/{SECOND}")
    resolve = pattern_lookup(sandbox)
    recorder = Recorder()
    with following(resolve().servers, resolve, recorder, sampling=True) as stop:
        wait_until(lambda: recorder.latest_perf(second) is True, "sampling on in both servers")
        with frozen(sandbox, SECOND):
            drop_second_while_frozen(sandbox, recorder)
            stop()  # still frozen: only the way out can turn sampling off

    warned = any(second in text and "sampling" in text for text in recorder.warnings())
    assert warned or query_server(second).perf_monitoring is False, recorder.said
    assert query_server(first).perf_monitoring is False
