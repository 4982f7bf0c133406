"""How devices and streams are named, and what names are refused at once."""

from __future__ import annotations

import pytest
import tango

from milonga.scheduler.streams import database_unreachable, device_trl, stream_key

CHANGE = tango.EventType.CHANGE_EVENT


def test_every_spelling_of_one_device_names_one_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "localhost:10000")
    spellings = ["foo/bar/1", "Foo/Bar/1", "tango://LOCALHOST:10000/foo/bar/1"]

    keys = {stream_key(name, "Value", CHANGE) for name in spellings}

    assert keys == {stream_key("tango://127.0.0.1:10000/foo/bar/1", "value", CHANGE)}
    assert str(keys.pop()) == "tango://127.0.0.1:10000/foo/bar/1/value.change"


def test_a_stream_is_named_with_its_database() -> None:
    names = {
        str(stream_key(f"tango://127.0.0.1:{port}/foo/bar/1", "value", CHANGE))
        for port in (10000, 10001)
    }

    assert names == {
        "tango://127.0.0.1:10000/foo/bar/1/value.change",
        "tango://127.0.0.1:10001/foo/bar/1/value.change",
    }


def test_tango_host_without_port_means_port_10000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "127.0.0.1")

    assert device_trl("a/b/c") == "tango://127.0.0.1:10000/a/b/c"


@pytest.mark.parametrize(
    "bad",
    [
        "foo/bar",
        "tango://host/foo/bar/1",
        "tango://host:1/foo/bar",
        "tango://host:abc/foo/bar/1",
        "tango://host:70000/foo/bar/1",
    ],
)
def test_malformed_names_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match="domain/family/member"):
        device_trl(bad)


def test_a_bare_name_needs_tango_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANGO_HOST", raising=False)

    with pytest.raises(ValueError, match="TANGO_HOST is not set"):
        device_trl("foo/bar/1")


def test_a_malformed_tango_host_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "localhost:tenthousand")

    with pytest.raises(ValueError, match="TANGO_HOST 'localhost:tenthousand' is not"):
        device_trl("foo/bar/1")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            ("a/b/c", "value", 999),
            TypeError,
            r"event_type must be a tango.EventType, got 999 \(int",
        ),
        (("a/b/c", "value", "change"), TypeError, "use tango.EventType.CHANGE_EVENT"),
        (("a/b/c", "value", None), TypeError, "event_type must be a tango.EventType, got None"),
        (("a/b/\udcff", "value", CHANGE), ValueError, "device .* unprintable character"),
        (("a/b/c", "val\udcffue", CHANGE), ValueError, "attr_name .* '\\\\udcff' at index 3"),
        (("a/b/c", "", CHANGE), ValueError, "attr_name is empty"),
        (("a/b/c", None, CHANGE), TypeError, "attr_name must be a string .* got None"),
        ((None, "value", CHANGE), TypeError, "device must be a tango.DeviceProxy or a string"),
        ((42, "value", CHANGE), TypeError, r"device must be .* got 42 \(int\)"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    monkeypatch: pytest.MonkeyPatch,
    arguments: tuple[object, object, object],
    error: type[Exception],
    message: str,
) -> None:
    monkeypatch.setenv("TANGO_HOST", "127.0.0.1:10000")

    with pytest.raises(error, match=message):
        stream_key(*arguments)  # type: ignore[arg-type]


def test_only_an_unreachable_database_is_every_devices_failure() -> None:
    def failure(reason: str) -> tango.DevFailed:
        error = tango.DevError()
        error.reason = reason
        return tango.DevFailed(error)

    assert database_unreachable(failure("API_CantConnectToDatabase"))
    assert not database_unreachable(failure("DB_DeviceNotDefined"))
    assert not database_unreachable(LookupError("API_CantConnectToDatabase"))
