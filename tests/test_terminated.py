"""The stop-signal handling that milonga's tools and the sandbox share."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

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


def _run_with_signal_at_step(step: int) -> tuple[int | None, list[str], bool]:
    """Run a command and send Ctrl-C at its ``step``-th call or return counted from the
    moment its load step has returned, or as its tool starts if that comes first.

    Returns its status (None if it raised KeyboardInterrupt), what ran, and whether the
    signal came as the tool started.
    """
    ran: list[str] = []
    loaded = False
    steps = 0
    at_tool = False

    def tool() -> int:
        ran.append("tool")
        return 0

    def load() -> Callable[[], int]:
        ran.append("load")
        return tool

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal loaded, steps, at_tool
        if frame.f_code is load.__code__:
            loaded = event == "return"
        elif loaded:
            at_tool = frame.f_code is tool.__code__
            if steps == step or at_tool:
                sys.setprofile(None)
                signal.raise_signal(signal.SIGINT)
            steps += 1

    sys.setprofile(profile)
    try:
        status: int | None = run_command("prog", load)
    except KeyboardInterrupt:
        status = None
    finally:
        sys.setprofile(None)
    return status, ran, at_tool


def test_no_signal_is_lost_between_loading_and_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    usual = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    held_at = []
    step = 0
    at_tool = False
    while not at_tool:  # one run per call and return between the two
        status, ran, at_tool = _run_with_signal_at_step(step)

        assert ran == ["load"], f"the tool ran as though Ctrl-C at step {step} never came"
        assert status in (130, None), "held and reported, or raised as the tool starts"
        if status == 130:
            held_at.append(step)
        assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == usual
        step += 1

    assert held_at, "Ctrl-C right after loading should be held and reported"
    assert capsys.readouterr().err.count("interrupted while starting") == len(held_at)
