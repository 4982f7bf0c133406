"""The stop-signal handling that milonga's tools and the sandbox share."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from milonga.terminated import STOP_SIGNALS, Terminated, handling, run_command


def test_stop_signals_can_be_ignored_until_a_block_ends() -> None:
    usual = signal.getsignal(signal.SIGINT)

    with handling(dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)):
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt here

    assert signal.getsignal(signal.SIGINT) is usual


def _loading_with(signum: int | None, ran: list[str]) -> Callable[[], Callable[[], int]]:
    """A load step that gets ``signum`` (if any) while it imports, as a user may send it,
    and returns a tool that notes that it ran."""

    def load() -> Callable[[], int]:
        if signum is not None:
            os.kill(os.getpid(), signum)  # held: nothing is raised in here
        ran.append("load")

        def tool() -> int:
            ran.append("tool")
            return 0

        return tool

    return load


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [
        (signal.SIGINT, 130, "prog: interrupted while starting; it started nothing\n"),
        (signal.SIGTERM, 143, "prog: terminated while starting; it started nothing\n"),
        (signal.SIGHUP, 143, "prog: terminated while starting; it started nothing\n"),
    ],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_a_signal_while_loading_is_held_and_ends_the_command_before_it_runs(
    signum: int, status: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    usual = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    ran: list[str] = []

    assert run_command("prog", _loading_with(signum, ran)) == status

    assert ran == ["load"], "the load step finished and the tool never ran"
    assert capsys.readouterr().err == said
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == usual


def test_the_tool_runs_with_stop_signals_raising() -> None:
    def tool() -> int:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
        return 7

    assert run_command("prog", lambda: tool) == 7


def test_a_signal_the_program_was_started_to_ignore_stays_ignored() -> None:
    ran: list[str] = []
    with handling({signal.SIGHUP: signal.SIG_IGN}):  # as under nohup
        assert run_command("prog", _loading_with(signal.SIGHUP, ran)) == 0

    assert ran == ["load", "tool"]
