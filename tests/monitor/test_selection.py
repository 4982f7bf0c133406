"""Server selection without Tango: what a pattern is, the command line's checks, and a
collector taking a new set of servers."""

from __future__ import annotations

import io

import pytest

from milonga.monitor.cli import EXIT_USAGE, build_parser, run
from milonga.monitor.collector import Collector, is_pattern
from milonga.monitor.poll import MonitoredServer


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sys/*/*", True),
        ("sys/tg_test/?", True),
        ("sys/[ab]*/1", True),
        ("tango://host:10000/sys/*/1", True),
        ("sys/tg_test/1", False),
        ("dserver/Pub/1", False),
        ("my_alias", False),
        ("tango://host:10000/a/b/c#dbase=no", False),
    ],
)
def test_a_pattern_is_a_name_with_a_shell_wildcard(name: str, expected: bool) -> None:
    assert is_pattern(name) is expected


def run_monitor(*argv: str) -> tuple[int, str]:
    """Run the command line in this process; return its status and standard error."""
    out, err = io.StringIO(), io.StringIO()
    status = run(build_parser().parse_args(list(argv)), out=out, err=err)
    assert out.getvalue() == ""
    return status, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), "no device given; name at least one device, admin device or pattern"),
        (("--serve", "9100"), "or give --all to poll every device server"),
        (("--quiet", "-o", "-", "a/b/c"), "--quiet leaves standard output empty"),
    ],
)
def test_bad_selections_get_one_clear_line_and_status_2(
    argv: tuple[str, ...], expected: str
) -> None:
    status, err = run_monitor(*argv)

    assert status == EXIT_USAGE
    assert err.startswith("tango-event-monitor: error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_all_without_a_database_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANGO_HOST", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")

    status, err = run_monitor("--all")

    assert status == EXIT_USAGE
    assert "TANGO_HOST is not set" in err


def test_a_bad_serve_address_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--all", "--serve", "localhost:http"])

    assert exit_.value.code == EXIT_USAGE
    assert "cannot read the address 'localhost:http'" in capsys.readouterr().err


def test_a_collector_takes_a_new_set_of_servers_by_admin_device() -> None:
    kept, gone, new = (MonitoredServer(f"dserver/S/{n}") for n in ("kept", "gone", "new"))
    with Collector([kept, gone]) as collector:
        relabelled = MonitoredServer(kept.admin, ("s/k/*",))
        collector.set_servers([relabelled, new])

        assert collector.servers == (relabelled, new)
        collector.set_servers([])
        assert not collector.servers
