"""Reading how a command ended from a device's records (pure parsing, no Tango)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from milonga.lrc import TaskStatus
from milonga.lrc.catchup import ask_device_after_outage, finished_v1, finished_v2
from milonga.lrc.protocol import V1_RESULT, V1_STATUS


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


class Reading:
    def __init__(self, value: list[str] | None) -> None:
        self.value = value


class RecordsProxy:
    """Answers `read_attributes` from fixed attribute values, as a device would."""

    def __init__(self, values: dict[str, list[str] | None]) -> None:
        self._values = values

    def read_attributes(self, names: list[str]) -> list[Reading]:
        return [Reading(self._values[name]) for name in names]


def _v2_records(
    queue: list[str] | None = None,
    executing: list[str] | None = None,
    finished: list[str] | None = None,
) -> RecordsProxy:
    return RecordsProxy({"lrcQueue": queue, "lrcExecuting": executing, "lrcFinished": finished})


def test_after_an_outage_a_command_the_device_forgot_is_not_found() -> None:
    device = _v2_records(finished=[_entry("1-other", status="COMPLETED")])
    v1_device = RecordsProxy({V1_STATUS: ["1-other", "COMPLETED"], V1_RESULT: None})

    for proxy, version in ((device, 2), (v1_device, 1)):
        update = ask_device_after_outage(proxy, version, "2-mine")  # type: ignore[arg-type]
        assert update == {"status": TaskStatus.NOT_FOUND}


def test_after_an_outage_a_command_still_waiting_or_running_is_left_to_its_updates() -> None:
    waiting = _v2_records(queue=[_entry("2-mine", status="QUEUED")])
    running = _v2_records(executing=[_entry("2-mine", status="IN_PROGRESS")])
    v1_running = RecordsProxy({V1_STATUS: ["2-mine", "IN_PROGRESS"], V1_RESULT: None})

    for proxy, version in ((waiting, 2), (running, 2), (v1_running, 1)):
        assert ask_device_after_outage(proxy, version, "2-mine") is None  # type: ignore[arg-type]


def test_after_an_outage_a_finished_command_reports_its_end() -> None:
    device = _v2_records(finished=[_entry("2-mine", status="COMPLETED", result=[0, "done"])])

    update = ask_device_after_outage(device, 2, "2-mine")  # type: ignore[arg-type]

    assert update == {"status": TaskStatus.COMPLETED, "result": [0, "done"]}
