"""Parsing QueryEventSystem replies captured from real servers, and rejecting bad ones."""

from __future__ import annotations

import dataclasses
import json

import pytest

from milonga.monitor import SnapshotFormatError, parse_snapshot
from milonga.monitor.snapshot import EMPTY_SNAPSHOT, ServerSide, Subscription, short_name
from tests.monitor.data import COUNTER_STREAM, COUNTER_TOPIC, TANGO_HOST, snapshot, text


def test_a_publisher_has_counters_per_stream_and_no_client_side() -> None:
    publisher = snapshot("publisher_2.json")

    assert publisher.server is not None
    assert publisher.server.publishers == {COUNTER_STREAM: 120}
    assert publisher.client is None


def test_the_publisher_counter_is_the_last_pushed_one_not_the_next() -> None:
    # cppTango's event_counters hold the next event's counter: 1 when the stream is
    # created, 121 after the 120 events its only subscriber received without a loss.
    assert json.loads(text("publisher_2.json"))["server"]["event_counters"][COUNTER_STREAM] == 121
    publisher, subscriber = snapshot("publisher_2.json"), snapshot("subscriber_2.json")

    assert publisher.server is not None
    assert subscriber.client is not None
    received = subscriber.client.subscriptions[COUNTER_TOPIC]
    assert received.missed_event_count == 0
    assert publisher.server.publishers[COUNTER_STREAM] == received.server_counter == 120
    assert snapshot("publisher_1.json").server == ServerSide({COUNTER_STREAM: 0}, perf=())


def test_server_perf_samples_keep_the_first_gap_unknown() -> None:
    publisher = snapshot("publisher_2.json")

    assert publisher.server is not None
    assert publisher.server.perf is not None
    assert len(publisher.server.perf) == 120
    assert publisher.server.perf[0].micros_since_last_event is None
    assert all(s.micros_since_last_event is not None for s in publisher.server.perf[1:])
    assert all(s.push_event_micros >= 0 for s in publisher.server.perf)


def test_a_subscription_carries_its_counters_and_channel() -> None:
    subscriber = snapshot("subscriber_2.json")

    assert subscriber.client is not None
    subscription = subscriber.client.subscriptions[COUNTER_TOPIC]
    assert subscription.channel == f"tango://{TANGO_HOST}/dserver/monitorpub/1"
    assert (subscription.event_count, subscription.server_counter) == (120, 120)
    assert (subscription.callback_count, subscription.missed_event_count) == (1, 0)
    assert subscription.discarded_event_count == 2
    assert subscription.last_resubscribed is None
    assert set(subscriber.client.channels) == {subscription.channel}


def test_client_perf_samples_mark_discarded_events() -> None:
    subscriber = snapshot("subscriber_2.json")

    assert subscriber.client is not None
    samples = subscriber.client.perf
    assert samples is not None
    discarded = [s for s in samples if s.discarded]
    assert len(discarded) == 2
    assert all(s.attr_name == "" and s.callback_count == 0 for s in discarded)
    assert all(s.first_callback_latency_micros is None for s in discarded)
    assert {s.attr_name for s in samples if not s.discarded} == {"value"}


def test_a_subscription_to_a_stopped_server_waits_in_not_connected() -> None:
    waiting = snapshot("subscriber_waiting.json")

    assert waiting.client is not None
    assert waiting.client.subscriptions == {}
    (entry,) = waiting.client.not_connected
    assert entry.stream == "test/monitor/counter/value.change"
    assert entry.tango_host == f"tango://{TANGO_HOST}/"
    assert entry.last_heartbeat.startswith("20")


def test_a_pure_client_process_has_no_server_side() -> None:
    process = snapshot("process_2.json")

    assert process.server is None
    assert process.client is not None
    assert process.client.perf is not None


def test_perf_monitoring_state_shows_as_null_or_list() -> None:
    on = snapshot("publisher_1.json")
    off = parse_snapshot(text("publisher_1.json").replace('"perf": []', '"perf": null'))

    assert on.perf_monitoring is True
    assert off.perf_monitoring is False
    assert EMPTY_SNAPSHOT.perf_monitoring is None


def test_the_decoded_object_parses_like_the_text() -> None:
    assert parse_snapshot(json.loads(text("subscriber_3.json"))) == snapshot("subscriber_3.json")


def test_unknown_keys_are_ignored() -> None:
    data = json.loads(text("subscriber_1.json"))
    data["extra"] = 1
    data["client"]["event_callbacks"][COUNTER_TOPIC]["new_counter"] = 7

    assert parse_snapshot(data) == snapshot("subscriber_1.json")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"version": 2, "server": null, "client": null}', "version 2"),
        ('{"version": 1, "server": {"perf": null}, "client": null}', "event_counters"),
        (
            '{"version": 1, "server": {"event_counters": {"s": "7"}, "perf": null}, '
            '"client": null}',
            "not an integer",
        ),
    ],
)
def test_bad_replies_raise_a_format_error_saying_what(reply: str, message: str) -> None:
    with pytest.raises(SnapshotFormatError, match=message):
        parse_snapshot(reply)


def test_short_names_drop_the_host_prefix_only() -> None:
    assert short_name(COUNTER_TOPIC) == "test/monitor/counter/value.idl5_change"
    assert short_name("foo/bar/hw/mode.change") == "foo/bar/hw/mode.change"


GOOD_CLIENT_SAMPLE = {
    "attr_name": "value",
    "micros_since_last_event": 100,
    "sleep_micros": 5,
    "process_micros": 7,
    "first_callback_latency_micros": None,
    "callback_count": 1,
    "wake_count": 1,
    "discarded": False,
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("process_micros", 7.5, r"client\.perf\[\]\.process_micros is 7\.5, not an integer"),
        ("micros_since_last_event", "1", r"micros_since_last_event is '1', not an integer"),
        ("first_callback_latency_micros", True, r"latency_micros is True, not an integer"),
        ("wake_count", None, r"wake_count is missing or null, not an integer"),
        ("discarded", 0, r"client\.perf\[\]\.discarded is 0, not true or false"),
    ],
)
def test_a_client_sample_field_of_the_wrong_type_is_named(
    field: str, value: object, message: str
) -> None:
    def reply(sample: dict[str, object]) -> dict[str, object]:
        return {"version": 1, "server": None, "client": {"event_callbacks": {}, "perf": [sample]}}

    assert parse_snapshot(reply(GOOD_CLIENT_SAMPLE))
    with pytest.raises(SnapshotFormatError, match=message):
        parse_snapshot(reply({**GOOD_CLIENT_SAMPLE, field: value}))


GOOD_SUBSCRIPTION = {
    "channel_name": "tango://h:1/dserver/pub/1",
    "callback_count": 1,
    "server_counter": 5,
    "event_count": 5,
    "missed_event_count": 0,
    "discarded_event_count": 2,
    "last_resubscribed": None,
}


def _client_reply(entry: object, channel: object = None) -> dict[str, object]:
    channels = {} if channel is None else {"tango://h:1/dserver/pub/1": channel}
    return {
        "version": 1,
        "server": None,
        "client": {"event_callbacks": {"t/1": entry}, "event_channels": channels},
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([], r"client\.event_callbacks\['t/1'\] is \[\], not a JSON object"),
        ({**GOOD_SUBSCRIPTION, "channel_name": 3}, r"\['t/1'\]\.channel_name is 3, not a string"),
        ({**GOOD_SUBSCRIPTION, "callback_count": None}, r"\.callback_count is missing or null"),
        ({**GOOD_SUBSCRIPTION, "server_counter": "5"}, r"\['t/1'\]\.server_counter is '5', not"),
        ({**GOOD_SUBSCRIPTION, "event_count": 5.0}, r"\.event_count is 5\.0, not an integer"),
        ({**GOOD_SUBSCRIPTION, "missed_event_count": True}, r"\.missed_event_count is True"),
        ({**GOOD_SUBSCRIPTION, "discarded_event_count": [2]}, r"\.discarded_event_count is \[2\]"),
    ],
)
def test_a_subscription_field_of_the_wrong_type_is_named(entry: object, message: str) -> None:
    assert parse_snapshot(_client_reply(GOOD_SUBSCRIPTION))
    with pytest.raises(SnapshotFormatError, match=message):
        parse_snapshot(_client_reply(entry))


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("tcp://x", r"client\.event_channels\['tango://h:1/dserver/pub/1'\] is 'tcp://x', not a"),
        ({"endpoint": 1}, r"channel\.endpoint is 1, not a string"),
    ],
)
def test_a_channel_without_an_endpoint_text_is_named(channel: object, message: str) -> None:
    assert parse_snapshot(_client_reply(GOOD_SUBSCRIPTION, {"endpoint": "tcp://x"}))
    with pytest.raises(SnapshotFormatError, match=message):
        parse_snapshot(_client_reply(GOOD_SUBSCRIPTION, channel))


def test_a_subscription_read_quickly_is_one_like_any_other() -> None:
    subscription = Subscription("t/1", "tango://h:1/dserver/pub/1", 1, 5, 5, 0, 2, "12:00")
    reply = _client_reply({**GOOD_SUBSCRIPTION, "last_resubscribed": "12:00"})
    client = parse_snapshot(reply).client

    assert client is not None
    read = client.subscriptions["t/1"]
    assert (read, hash(read), repr(read)) == (subscription, hash(subscription), repr(subscription))
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.event_count = 6  # type: ignore[misc]
