"""Reading how a command ended from a device's records (pure parsing, no Tango)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from milonga.lrc import TaskStatus
from milonga.lrc.catchup import finished_v1, finished_v2


def _entry(uid: str, **fields: object) -> str:
    return json.dumps({"uid": uid, "name": "Move", **fields})


def test_v2_finds_the_command_among_the_finished_ones() -> None:
    entries = [
        _entry("1-other", status="COMPLETED", result=1),
        "not json",
        _entry("2-mine", status="FAILED", result=[3, "ValueError: limit"]),
    ]

    assert finished_v2(entries, "2-mine") == {
        "status": TaskStatus.FAILED,
        "result": [3, "ValueError: limit"],
    }


def test_v2_takes_the_status_as_a_name_or_a_number_and_the_result_may_be_missing() -> None:
    assert finished_v2([_entry("a", status=5)], "a") == {"status": TaskStatus.COMPLETED}
    assert finished_v2([_entry("a", status="aborted")], "a") == {"status": TaskStatus.ABORTED}


def test_v2_says_nothing_for_a_command_not_finished_or_unknown() -> None:
    assert finished_v2([_entry("a", status="IN_PROGRESS")], "a") is None
    assert finished_v2([_entry("a", status="no such status")], "a") is None
    assert finished_v2([_entry("b", status="COMPLETED")], "a") is None
    assert finished_v2(None, "a") is None


def test_v1_pairs_the_terminal_status_with_the_result_when_it_is_this_commands() -> None:
    statuses = ["1-other", "IN_PROGRESS", "2-mine", "COMPLETED"]

    assert finished_v1(statuses, ["2-mine", '{"steps": 2}'], "2-mine") == {
        "status": TaskStatus.COMPLETED,
        "result": {"steps": 2},
    }
    assert finished_v1(statuses, ["1-other", "7"], "2-mine") == {"status": TaskStatus.COMPLETED}
    assert finished_v1(statuses, None, "1-other") is None, "still running"
    assert finished_v1(["2-mine", "garbled"], None, "2-mine") is None


@given(st.lists(st.text(max_size=20), max_size=8), st.text(max_size=10))
def test_records_that_are_not_the_protocols_never_raise(entries: list[str], uid: str) -> None:
    finished_v2(entries, uid)
    finished_v1(entries, entries, uid)
