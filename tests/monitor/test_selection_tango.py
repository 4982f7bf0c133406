"""Server selection against a real database: patterns, and a poll loop that follows
servers as they come and go."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from milonga.monitor import query_server
from milonga.monitor.analysis import PollUpdate
from milonga.monitor.cli import EXIT_OK, build_parser, run
from milonga.monitor.collector import Collector, MonitorSetupError, Selection, select_servers
from milonga.monitor.loop import PollLoop
from milonga.monitor.poll import MonitoredServer
from milonga.sandbox import TangoSandbox
from milonga.testing import SandboxServers, wait_until
from tests.monitor.frozen import frozen

pytestmark = pytest.mark.requires_pytango10("QueryEventSystem needs cppTango 10")

FIRST, SECOND = "MonitorSelect/1", "MonitorSelect/2"
FIRST_DEVICE, SECOND_DEVICE = "test/select/one", "test/select/two"


class Recorder:
    """An output that keeps every poll's updates, for the test thread to wait on."""

    def __init__(self) -> None:
        self.updates: list[PollUpdate] = []
        self.said: list[str] = []
        self._lock = threading.Lock()

    def write(self, update: PollUpdate) -> None:
        with self._lock:
            self.updates.append(update)

    def say(self, kind: str, text: str) -> None:
        with self._lock:
            self.said.append(f"{kind}: {text}")

    def had_error(self, text: str) -> bool:
        """Whether a poll so far had an error reply holding ``text``."""
        with self._lock:
            updates = list(self.updates)
        return any(text in (r.error or "") for u in updates for r in u.poll.replies)

    def warnings(self) -> list[str]:
        with self._lock:
            return [text for text in self.said if text.startswith("warning: ")]

    def latest_perf(self, admin: str) -> bool | None:
        """Whether the latest poll's answer of ``admin`` had sampling on; None without one."""
        with self._lock:
            if not self.updates:
                return None
            replies = {r.server.admin: r for r in self.updates[-1].poll.replies}
        reply = replies.get(admin)
        return None if reply is None or reply.snapshot is None else reply.snapshot.perf_monitoring

    def polled(self) -> set[str]:
        """The admin devices of the latest poll."""
        with self._lock:
            latest = self.updates[-1].poll.replies if self.updates else ()
        return {reply.server.admin for reply in latest}


@contextlib.contextmanager
def following(
    servers: Sequence[MonitoredServer],
    resolve: Callable[[], Selection],
    recorder: Recorder,
    **options: Any,
) -> Iterator[Callable[[], None]]:
    """A `PollLoop` on a thread of its own, polling ``servers`` every 0.2 s into
    ``recorder`` and looking them up again with ``resolve`` every 0.2 s, with any other
    ``options`` of `PollLoop`.  Yields a function that stops the loop and waits for it to
    end, as leaving the block does too."""
    with Collector(servers) as collector:
        loop = PollLoop(
            collector,
            [recorder],
            period=0.2,
            say=recorder.say,
            prog="test",
            resolve=resolve,
            resolve_period=0.2,
            **options,
        )
        runner = threading.Thread(target=loop.run, name="test-poll-loop")

        def stop() -> None:
            loop.stop()
            runner.join()

        runner.start()
        try:
            yield stop
        finally:
            stop()


def start_second(servers: SandboxServers) -> None:
    """Start the second server of the pattern, with its device."""
    servers.add_device(SECOND, "Counter", SECOND_DEVICE)
    servers.start(SECOND, "tests/devices/counter.py")


def pattern_lookup(sandbox: TangoSandbox) -> Callable[[], Selection]:
    """The lookup of every server of a ``test/select/*`` device."""
    return functools.partial(select_servers, [sandbox.trl("test/select/*")])


def drop_second_while_frozen(sandbox: TangoSandbox, recorder: Recorder) -> None:
    """With the second server frozen: wait for a call to it under way, delete its device,
    and wait until only the first server is polled."""
    first = sandbox.trl(f"dserver/{FIRST}")
    wait_until(lambda: recorder.had_error("no answer for"), "a call under way")
    sandbox.database().delete_device(SECOND_DEVICE)
    wait_until(lambda: recorder.polled() == {first}, "the frozen server dropped")


@pytest.fixture
def two_servers(sandbox_servers: SandboxServers) -> SandboxServers:
    sandbox_servers.add_device(FIRST, "Counter", FIRST_DEVICE)
    sandbox_servers.start(FIRST, "tests/devices/counter.py")
    return sandbox_servers


def test_a_pattern_selects_the_servers_of_matching_exported_devices(
    two_servers: SandboxServers,
) -> None:
    sandbox = two_servers.sandbox
    pattern = sandbox.trl("TEST/Select/*")  # case does not matter
    selection = select_servers([pattern, sandbox.trl(FIRST_DEVICE), sandbox.trl("no/such/*")])

    (server,) = selection.servers  # one server, however many names lead to it
    assert server.admin.lower() == sandbox.trl(f"dserver/{FIRST}").lower()
    assert server.devices == (pattern, sandbox.trl(FIRST_DEVICE))
    assert selection.unmatched == (sandbox.trl("no/such/*"),)


def test_a_pattern_with_a_database_out_of_reach_is_a_setup_error() -> None:
    with pytest.raises(
        MonitorSetupError, match=re.escape("cannot reach the Tango database at 127.0.0.1:1")
    ):
        select_servers(["tango://127.0.0.1:1/sys/*/*"])


def test_the_loop_follows_servers_that_appear_and_go_away(two_servers: SandboxServers) -> None:
    sandbox = two_servers.sandbox
    first, second = sandbox.trl(f"dserver/{FIRST}"), sandbox.trl(f"dserver/{SECOND}")
    resolve = pattern_lookup(sandbox)
    recorder = Recorder()
    with following(resolve().servers, resolve, recorder, sampling=True):
        wait_until(lambda: recorder.latest_perf(first) is True, "the first server sampled")

        start_second(two_servers)
        wait_until(lambda: recorder.latest_perf(second) is True, "the new server sampled")

        # Gone from the database while it still runs: dropped, and sampling off in it.
        sandbox.database().delete_device(SECOND_DEVICE)
        wait_until(lambda: second not in recorder.polled(), "the server gone dropped")
        wait_until(
            lambda: query_server(second).perf_monitoring is False,
            "sampling off in the server dropped",
        )
    assert query_server(first).perf_monitoring is False
    assert first in recorder.polled()
    notes = "\n".join(recorder.said)
    assert f"note: polling {second} (from {sandbox.trl('test/select/*')}) from now on" in notes
    assert f"note: no longer polling {second}" in notes
    assert "warning: could not look up" not in notes


def test_a_lookup_that_fails_is_a_warning_and_keeps_the_servers(
    two_servers: SandboxServers,
) -> None:
    sandbox = two_servers.sandbox
    first = sandbox.trl(f"dserver/{FIRST}")
    recorder = Recorder()
    with following(
        select_servers([sandbox.trl(FIRST_DEVICE)]).servers,
        functools.partial(select_servers, ["tango://127.0.0.1:1/test/select/*"]),
        recorder,
    ):
        wait_until(lambda: len(recorder.warnings()) >= 2, "two failed lookups said")
        polls = len(recorder.updates)
        wait_until(lambda: len(recorder.updates) > polls, "a poll after them")

    assert recorder.polled() == {first}
    assert recorder.warnings()[0].startswith(
        "warning: could not look up the servers to poll again (cannot reach the Tango "
        "database at 127.0.0.1:1 to look up 'tango://127.0.0.1:1/test/select/*'"
    )
    assert "still polling the same 1 server(s), and looking again in 0.2 s" in recorder.said[0]


def test_a_server_dropped_while_its_call_is_under_way_holds_up_nothing(
    two_servers: SandboxServers,
) -> None:
    sandbox = two_servers.sandbox
    start_second(two_servers)
    first, second = sandbox.trl(f"dserver/{FIRST}"), sandbox.trl(f"dserver/{SECOND}")
    resolve = pattern_lookup(sandbox)
    recorder = Recorder()
    with following(resolve().servers, resolve, recorder):
        wait_until(lambda: recorder.polled() == {first, second}, "both servers polled")
        with frozen(sandbox, SECOND):
            drop_second_while_frozen(sandbox, recorder)
            polls = len(recorder.updates)
        wait_until(lambda: len(recorder.updates) > polls + 2, "polls after it resumed")

    assert recorder.polled() == {first}
    assert all(reply.snapshot is not None for reply in recorder.updates[-1].poll.replies), (
        "the server kept answers"
    )


def test_the_command_line_polls_all_servers_and_warns_about_a_pattern_matching_nothing(
    two_servers: SandboxServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = two_servers.sandbox
    monkeypatch.setenv("TANGO_HOST", sandbox.tango_host)
    output = tmp_path / "polls.jsonl"
    out, err = io.StringIO(), io.StringIO()
    arguments = ["--all", "no/such/*", "--count", "1", "--quiet", "-o", str(output)]

    status = run(build_parser().parse_args(arguments), out=out, err=err)

    assert status == EXIT_OK, err.getvalue()
    assert out.getvalue() == ""
    assert "warning: 'no/such/*' matches no exported device yet" in err.getvalue()
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    exported = {f"dserver/{server}".lower() for server in sandbox.servers}
    assert {admin.lower() for admin in record["replies"]} >= exported | {f"dserver/{FIRST}".lower()}
