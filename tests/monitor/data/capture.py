"""Capture the QueryEventSystem replies in this directory from real servers.

Run it from the repository root to refresh them: ``.venv/bin/python -m
tests.monitor.data.capture``.  It takes about half a minute, most of it waiting for Tango's
10 s reconnection cadence.  The story it records, with performance sampling on throughout:

- ``subscriber_waiting.json``: the relay server subscribed to a counter whose server is
  not running yet, so the subscription waits in ``not_connected``;
- ``publisher_1.json``, ``subscriber_1.json``: both running, the subscription connected;
- ``publisher_2.json``, ``subscriber_2.json``, ``process_2.json``: after 120 increments,
  relayed with a slow (2 ms) callback; this process subscribes too and reports as a client;
- ``publisher_3.json``, ``subscriber_3.json``: the counter's server restarted and
  incremented 5 times, so its counter went down and the relay resubscribed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tango

from milonga.sandbox import TangoSandbox

HERE = Path(__file__).parent
COUNTER = "test/monitor/counter"
RELAY = "test/monitor/relay"
INCREMENTS = 120
AFTER_RESTART = 5
WAIT_SECONDS = 40.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.1)


def save(name: str, reply: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(reply)
    (HERE / name).write_text(json.dumps(data, indent=1) + "\n")
    return data


def main() -> None:
    with TangoSandbox() as sandbox:
        sandbox.add_device("MonitorPub/1", "Counter", COUNTER, {"Start": 0})
        sandbox.add_device(
            "MonitorSub/1",
            "Relay",
            RELAY,
            {"Source": sandbox.trl(COUNTER), "CallbackSeconds": 0.002},
        )
        sandbox.start_server("MonitorSub/1", "tests/devices/relay.py")
        subscriber = sandbox.proxy("dserver/MonitorSub/1")
        subscriber.EnableEventSystemPerfMon(True)
        save("subscriber_waiting.json", subscriber.QueryEventSystem())

        sandbox.start_server("MonitorPub/1", "tests/devices/counter.py")
        publisher = sandbox.proxy("dserver/MonitorPub/1")
        publisher.EnableEventSystemPerfMon(True)
        wait_until(
            lambda: not json.loads(subscriber.QueryEventSystem())["client"]["not_connected"],
            "the relay to connect",
        )
        save("publisher_1.json", publisher.QueryEventSystem())
        save("subscriber_1.json", subscriber.QueryEventSystem())

        api = tango.ApiUtil.instance()
        api.enable_event_system_perf_mon(True)
        received = threading.Semaphore(0)
        counter = sandbox.proxy(COUNTER)
        relay = sandbox.proxy(RELAY)
        own = counter.subscribe_event(
            "value", tango.EventType.CHANGE_EVENT, lambda _: received.release()
        )
        api.query_event_system()  # start the process's samples from here
        for _ in range(INCREMENTS):
            counter.Increment()
        wait_until(lambda: relay.received >= INCREMENTS, "the relay to receive every event")
        save("publisher_2.json", publisher.QueryEventSystem())
        save("subscriber_2.json", subscriber.QueryEventSystem())
        save("process_2.json", api.query_event_system())
        counter.unsubscribe_event(own)
        api.enable_event_system_perf_mon(False)

        before = json.loads(subscriber.QueryEventSystem())["client"]["event_channels"]
        sandbox.restart_server("MonitorPub/1")
        publisher.EnableEventSystemPerfMon(True)
        wait_until(
            lambda: json.loads(subscriber.QueryEventSystem())["client"]["event_channels"] != before,
            "the relay to reconnect to the restarted counter",
        )
        for _ in range(AFTER_RESTART):
            counter.Increment()
        wait_until(lambda: relay.received >= INCREMENTS + AFTER_RESTART, "events after the restart")
        save("publisher_3.json", publisher.QueryEventSystem())
        save("subscriber_3.json", subscriber.QueryEventSystem())


if __name__ == "__main__":
    main()
