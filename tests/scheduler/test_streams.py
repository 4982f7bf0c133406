"""How devices and streams are named."""

from __future__ import annotations

import pytest
import tango

from milonga.scheduler.streams import device_trl, stream_key


def test_every_spelling_of_one_device_names_one_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "localhost:10000")
    spellings = ["foo/bar/1", "Foo/Bar/1", "tango://LOCALHOST:10000/foo/bar/1"]

    keys = {stream_key(name, "Value", tango.EventType.CHANGE_EVENT) for name in spellings}

    assert keys == {
        stream_key("tango://127.0.0.1:10000/foo/bar/1", "value", tango.EventType.CHANGE_EVENT)
    }
    assert str(keys.pop()) == "foo/bar/1/value.change"


def test_tango_host_without_port_means_port_10000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "127.0.0.1")

    assert device_trl("a/b/c") == "tango://127.0.0.1:10000/a/b/c"


@pytest.mark.parametrize("bad", ["foo/bar", "tango://host/foo/bar/1", "tango://host:1/foo/bar"])
def test_malformed_names_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match="domain/family/member"):
        device_trl(bad)


def test_a_bare_name_needs_tango_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANGO_HOST", raising=False)

    with pytest.raises(ValueError, match="TANGO_HOST is not set"):
        device_trl("foo/bar/1")
