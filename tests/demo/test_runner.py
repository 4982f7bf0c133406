"""How the demo fails when its control system does not behave as the story needs, on a real
control system."""

from __future__ import annotations

import io

import psutil
import pytest

from milonga.demo import DemoError
from milonga.demo.live import Console
from milonga.demo.runner import tell
from milonga.demo.system import ROGUE, TOP_SERVER
from milonga.demo.timing import QUICK
from milonga.sandbox import TangoSandbox


def test_a_rogue_that_cannot_subscribe_stops_the_story_with_its_reason() -> None:
    before = psutil.Process().children(recursive=True)  # a session's sandbox, maybe
    with TangoSandbox() as sandbox:
        # Defined ahead of the demo, which keeps this property: a hw that does not exist.
        sandbox.add_device(TOP_SERVER, "RogueDevice", ROGUE, {"Hw": "foo/bar/nothere"})
        with pytest.raises(DemoError) as raised:
            tell(sandbox, QUICK, Console(io.StringIO()), use_scheduler=False, live=False)
    message = str(raised.value)

    assert f"{ROGUE} was expected to subscribe to the change events of foo/bar/hw" in message
    assert "cannot subscribe to foo/bar/nothere/position" in message, "what went wrong"
    assert "not defined in the database" in message, "the root cause, from Tango"
    assert "try again" in message, "what to do"
    assert psutil.Process().children(recursive=True) == before, "the sandbox stopped everything"
