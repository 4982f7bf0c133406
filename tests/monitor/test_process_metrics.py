"""ProcessEventSystemCollector: a process's own event system in the Prometheus text format,
for a client (this test process) and a device server, checked against `query_process`."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
import tango
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from milonga.monitor import Snapshot, parse_snapshot, query_process
from milonga.monitor.metrics import stream_labels
from milonga.prometheus import ProcessEventSystemCollector
from milonga.testing import SandboxServers, TangoEvents, wait_until
from tests.monitor.conftest import COUNTER, EventServers

pytestmark = pytest.mark.requires_pytango10("ApiUtil.query_event_system needs PyTango 10.3")

CLIENT = f"client/{socket.gethostname()}/{os.getpid()}"
"""How the collector names this test process, which runs no device server."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape's ``text``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def received(snapshot: Snapshot) -> dict[str, int]:
    """The events each subscription of ``snapshot`` received, by the exported stream name."""
    assert snapshot.client is not None
    labels = stream_labels(tuple(snapshot.client.subscriptions))
    return {
        labels[topic]: subscription.event_count
        for topic, subscription in snapshot.client.subscriptions.items()
    }


def start_exporting(sandbox_servers: SandboxServers, instance: int) -> tango.DeviceProxy:
    """An `ExportingCounter` device, running in server ``Exporting/instance``, that
    serves its own metrics."""
    device = f"test/exporting/{instance}"
    sandbox_servers.add_device(f"Exporting/{instance}", "ExportingCounter", device)
    sandbox_servers.start(f"Exporting/{instance}", "tests.devices.exporting_counter")
    return sandbox_servers.sandbox.proxy(device)


def scrape_device(device: tango.DeviceProxy) -> Samples:
    """What the metrics server of ``device`` (an `ExportingCounter`) serves."""
    url = f"http://127.0.0.1:{device.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=60) as response:
        return parse(response.read().decode())


def exported(samples: Samples, family: str, server: str) -> dict[str, float]:
    """The values of ``family`` for ``server``, by stream."""
    values = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == family and label.get("server") == server:
            values[label["stream"]] = value
    return values


def exported_servers(samples: Samples) -> set[str]:
    """Every ``server`` label of ``samples``."""
    return {dict(labels)["server"] for _, labels in samples if "server" in dict(labels)}


def steady_scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, int]]:
    """A scrape and the received counts of `query_process`, taken while those did not
    change: events of other subscriptions of this process may still arrive."""
    found: list[tuple[Samples, dict[str, int]]] = []

    def steady() -> bool:
        before = received(query_process())
        samples = parse(generate_latest(registry).decode())
        after = received(query_process())
        found[:] = [(samples, after)]
        return before == after

    wait_until(steady, "a scrape while this process's counters hold still")
    return found[0]


@pytest.fixture
def subscribed(event_servers: EventServers, tango_events: TangoEvents) -> TangoEvents:
    """This process subscribed to COUNTER's change events, its first event received."""
    counter = event_servers.sandbox.proxy(COUNTER)
    tango_events.subscribe(counter, "value")
    tango_events.assert_event(counter, "value")
    return tango_events


def test_a_client_exports_the_counters_query_process_gives(
    event_servers: EventServers, subscribed: TangoEvents
) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ProcessEventSystemCollector())
    stream = f"{COUNTER}/value.change"
    counter = event_servers.sandbox.proxy(COUNTER)

    first, counts = steady_scrape(registry)
    seen = len(subscribed.events(counter, "value"))

    def three_more() -> bool:
        # A new subscription can lose what is pushed in its first milliseconds: push on.
        counter.Increment()
        return len(subscribed.events(counter, "value")) >= seen + 3

    wait_until(three_more, "three more events")
    second, later = steady_scrape(registry)

    for samples, expected in ((first, counts), (second, later)):
        assert exported(samples, "tango_event_received_total", CLIENT) == expected
        assert samples[("tango_server_up", frozenset({("server", CLIENT)}))] == 1
    assert later[stream] >= counts[stream] + 3
    assert exported(second, "tango_event_callbacks", CLIENT)[stream] >= 1


def test_registering_takes_no_poll(event_servers: EventServers) -> None:
    collector = ProcessEventSystemCollector()
    CollectorRegistry(auto_describe=True).register(collector)  # asks describe()

    families = list(collector.describe())
    assert {"tango_server_up", "tango_event_received", "milonga_finding"} <= {
        family.name for family in families
    }
    assert [family.samples for family in families if family.samples] == []


def test_a_device_server_exports_its_pushed_counters_under_its_admin_device(
    sandbox_servers: SandboxServers,
) -> None:
    device = start_exporting(sandbox_servers, 1)
    subscription = device.subscribe_event("value", tango.EventType.CHANGE_EVENT, lambda _: None)
    try:
        for _ in range(4):
            device.Increment()  # counted by the server, whether or not delivered yet
        admin = sandbox_servers.sandbox.proxy("dserver/Exporting/1")
        publishers = parse_snapshot(admin.QueryEventSystem()).server
        samples = scrape_device(device)
    finally:
        device.unsubscribe_event(subscription)

    assert publishers is not None
    labels = stream_labels(tuple(publishers.publishers))
    pushed = {labels[stream]: counter for stream, counter in publishers.publishers.items()}
    assert exported(samples, "tango_event_pushed_total", "dserver/Exporting/1") == pushed
    assert pushed["test/exporting/1/value.change"] >= 4
    assert exported_servers(samples) == {"dserver/Exporting/1"}
    assert samples[("tango_server_up", frozenset({("server", "dserver/Exporting/1")}))] == 1


def test_a_scrape_before_the_server_starts_names_a_client(
    sandbox_servers: SandboxServers,
) -> None:
    device = start_exporting(sandbox_servers, 2)
    pid = sandbox_servers.sandbox.database().get_device_info("dserver/Exporting/2").pid

    samples = scrape_device(device)

    assert device.early_servers == f"client/{socket.gethostname()}/{pid}"
    assert exported_servers(samples) == {"dserver/Exporting/2"}
