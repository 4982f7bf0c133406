"""The protocol's pure logic: result codes, statuses, version negotiation, decoding, and
the checks `invoke_lrc` makes before it talks to a device."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milonga.lrc import LrcCallbackError, ProtocolVersionError, ResultCode, TaskStatus
from milonga.lrc.client import _arguments, check_lrc_callback
from milonga.lrc.protocol import (
    LRC_EVENT,
    V1_ATTRIBUTES,
    MalformedUpdateError,
    attributes_of,
    decode_v1,
    decode_v2,
    negotiate,
    parse_reply,
    parse_status,
)


def test_the_codes_have_the_numbers_the_field_uses() -> None:
    assert [(code.name, code.value) for code in ResultCode] == [
        ("OK", 0), ("STARTED", 1), ("QUEUED", 2), ("FAILED", 3), ("UNKNOWN", 4),
        ("REJECTED", 5), ("NOT_ALLOWED", 6), ("ABORTED", 7),
    ]  # fmt: skip
    assert [(status.name, status.value) for status in TaskStatus] == [
        ("STAGING", 0), ("QUEUED", 1), ("IN_PROGRESS", 2), ("ABORTED", 3), ("NOT_FOUND", 4),
        ("COMPLETED", 5), ("REJECTED", 6), ("FAILED", 7),
    ]  # fmt: skip


@given(st.sampled_from(TaskStatus), st.booleans())
def test_a_status_parses_from_its_number_or_its_name(status: TaskStatus, by_name: bool) -> None:
    raw: Any = status.name.lower() if by_name else status.value
    assert parse_status(raw) is status
    assert parse_status(str(status.value)) is status


@pytest.mark.parametrize("raw", ["DONE", 8, -1, None, "", 2.5j])
def test_an_unknown_status_says_what_is_expected(raw: Any) -> None:
    with pytest.raises(MalformedUpdateError, match="expected one of STAGING, QUEUED"):
        parse_status(raw)


@pytest.mark.parametrize(
    ("advertised", "version"),
    [(None, 1), ((1, 1), 1), ((1, 2), 2), ((2, 2), 2), ((2, 5), 2), ((0, 1), 1)],
)
def test_the_newest_common_version_is_chosen(advertised: Any, version: int) -> None:
    assert negotiate(advertised) == version


@pytest.mark.parametrize("advertised", [(3, 4), (0, 0), (1,), (1, 2, 3)])
def test_no_common_version_is_an_error_naming_both_ranges(advertised: Any) -> None:
    with pytest.raises(ProtocolVersionError, match="test/dev/1"):
        negotiate(advertised, "test/dev/1")


def test_the_attributes_follow_the_version() -> None:
    assert attributes_of(2) == (LRC_EVENT,)
    assert attributes_of(1) == V1_ATTRIBUTES


@given(st.sampled_from(ResultCode), st.text())
def test_a_reply_gives_its_code_and_text(code: ResultCode, text: str) -> None:
    assert parse_reply([[int(code)], [text]], "Move") == (code, text)


@pytest.mark.parametrize("reply", [None, "done", [[2]], [[2, 3], ["id"]], [[99], ["id"]]])
def test_a_reply_of_another_shape_asks_whether_it_is_an_lrc(reply: Any) -> None:
    with pytest.raises(MalformedUpdateError, match="check that Move is a long running command"):
        parse_reply(reply, "Move")


def test_v2_decodes_only_its_own_command() -> None:
    update = json.dumps({"status": "COMPLETED", "result": [0, "done"], "progress": 100})
    assert decode_v2(["id-1", update], "id-1") == {
        "status": TaskStatus.COMPLETED,
        "result": [0, "done"],
        "progress": 100,
    }
    assert decode_v2(["id-2", update], "id-1") is None
    assert decode_v2(None, "id-1") is None
    assert decode_v2(["", ""], "id-1") is None


@pytest.mark.parametrize("status", [5, "5", "COMPLETED", "completed", " Completed "])
def test_v2_status_is_taken_as_a_number_or_a_name(status: Any) -> None:
    # ska-tango-base pushes the number on _lrcEvent; other devices push the name.
    update = json.dumps({"status": status})
    assert decode_v2(["id-1", update], "id-1") == {"status": TaskStatus.COMPLETED}


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '{"status": "LOST"}'])
def test_v2_malformed_updates_are_errors(payload: str) -> None:
    with pytest.raises(MalformedUpdateError):
        decode_v2(["id-1", payload], "id-1")


@given(
    st.dictionaries(st.text(min_size=1), st.sampled_from(TaskStatus), max_size=6),
    st.text(min_size=1),
)
def test_v1_status_is_found_among_pairs(statuses: dict[str, TaskStatus], wanted: str) -> None:
    flat = [item for pair in statuses.items() for item in (pair[0], pair[1].name)]
    decoded = decode_v1("longrunningcommandstatus", flat, wanted)
    assert decoded == (None if wanted not in statuses else {"status": statuses[wanted]})


def test_v1_status_is_taken_as_a_name_or_a_number() -> None:
    for raw in ("FAILED", "failed", "7"):
        assert decode_v1("longRunningCommandStatus", ["a", "QUEUED", "b", raw], "b") == {
            "status": TaskStatus.FAILED
        }


def test_v1_progress_and_result_are_decoded() -> None:
    assert decode_v1("longRunningCommandProgress", ["a", "10", "b", "55"], "b") == {"progress": 55}
    assert decode_v1("longRunningCommandResult", ["b", '[0, "ok"]'], "b") == {"result": [0, "ok"]}
    assert decode_v1("longRunningCommandResult", ["b", "0"], "b") == {"result": 0}
    assert decode_v1("somethingElse", ["b", "1"], "b") is None
    with pytest.raises(MalformedUpdateError, match="expected an integer"):
        decode_v1("longRunningCommandProgress", ["b", "half"], "b")


def test_a_v1_result_that_is_not_json_is_passed_on_as_text() -> None:
    # Some field devices put a bare exception message in longRunningCommandResult.
    raw = "Exception occurred: device is in FAULT"
    assert decode_v1("longRunningCommandResult", ["b", raw], "b") == {"result": raw}


def test_v1_values_without_this_command_say_nothing() -> None:
    # What a v1 attribute holds before any command ran, and an odd-length list.
    assert decode_v1("longRunningCommandResult", ["", ""], "b") is None
    assert decode_v1("longRunningCommandStatus", ["a", "QUEUED", "b"], "b") is None
    assert decode_v1("longRunningCommandStatus", None, "b") is None


def test_callbacks_must_take_kwargs() -> None:
    def good(**kwargs: Any) -> None: ...

    def also_good(status: Any = None, **extra: Any) -> None: ...

    def bad(status: Any = None, result: Any = None) -> None: ...

    check_lrc_callback(good)
    check_lrc_callback(also_good)
    with pytest.raises(LrcCallbackError, match=r"add a \*\*kwargs parameter"):
        check_lrc_callback(bad)
    with pytest.raises(LrcCallbackError, match="must be a callable"):
        check_lrc_callback(42)  # type: ignore[arg-type]


def test_command_args_hold_one_argument() -> None:
    assert _arguments(None) == ()
    assert _arguments((1.5,)) == (1.5,)
    with pytest.raises(TypeError, match=r"such as \(42.0,\)"):
        _arguments(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one argument"):
        _arguments((1, 2))
