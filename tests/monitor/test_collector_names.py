"""Every spelling of one device server gives one key."""

from __future__ import annotations

from milonga.monitor.collector import server_key


def test_host_names_and_addresses_of_one_host_are_one_server() -> None:
    assert server_key("localhost", 10000, "dserver/Pub/1") == server_key(
        "127.0.0.1", "10000", "dserver/Pub/1"
    )


def test_case_does_not_matter() -> None:
    assert (
        server_key("LocalHost", 10000, "DSERVER/pub/1") == "tango://127.0.0.1:10000/dserver/pub/1"
    )


def test_other_ports_and_servers_are_other_servers() -> None:
    key = server_key("127.0.0.1", 10000, "dserver/Pub/1")
    assert key != server_key("127.0.0.1", 10001, "dserver/Pub/1")
    assert key != server_key("127.0.0.1", 10000, "dserver/Pub/2")
