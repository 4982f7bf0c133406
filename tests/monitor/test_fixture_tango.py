"""The `event_system_change` fixture: what one test did to its own process's event system."""

from __future__ import annotations

import pytest

from milonga.testing import EventSystemChange, TangoEvents
from tests.monitor.conftest import COUNTER, EventServers

pytestmark = pytest.mark.requires_pytango10("ApiUtil.query_event_system needs PyTango 10")


def test_the_fixture_shows_this_tests_subscription_and_events(
    event_servers: EventServers,
    event_system_change: EventSystemChange,
    tango_events: TangoEvents,
) -> None:
    counter = event_servers.sandbox.proxy(COUNTER)
    start = counter.value
    tango_events.subscribe(counter, "value")
    tango_events.assert_event(counter, "value", value=start)  # the value sent on subscription
    for _ in range(3):
        counter.Increment()
    for step in range(1, 4):
        tango_events.assert_event(counter, "value", value=start + step)
    report = event_system_change.report()
    text = event_system_change.render()

    (new,) = [s for s in report.new_subscriptions if COUNTER in s.topic]
    assert new.event_count == 3
    assert new.callback_count == 1
    assert "- New subscriptions" in text
    assert f"{COUNTER}/value.idl5_change: 3 events already processed" in text


def test_a_test_that_subscribes_to_nothing_changes_nothing(
    event_system_change: EventSystemChange,
) -> None:
    report = event_system_change.report()

    assert report.new_subscriptions == ()
    assert report.removed_subscriptions == ()
    assert report.new_publishers == ()
