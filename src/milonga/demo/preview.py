"""`milonga demo` for now: a one-device control system whose events are followed end to end.

It starts `HwDevice` in a sandbox, subscribes to its change events, runs a short scan,
prints every event as it arrives, and then prints the event system's own counters as
`QueryEventSystem` reports them on both sides.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable
from typing import Any, TextIO

import tango

from milonga.demo.devices import Mode
from milonga.sandbox import TangoSandbox

SCAN_SECONDS = 1.0
EVENT_WAIT_SECONDS = 10.0


def run_preview(out: TextIO) -> None:
    """Run the preview, writing a human-readable account to ``out``."""
    with TangoSandbox() as sandbox:
        sandbox.add_device("MyServer/hw", "HwDevice", "foo/bar/hw", {"ScanSeconds": SCAN_SECONDS})
        sandbox.start_server("MyServer/hw", "milonga.demo.devices")
        print(f"Started a Tango control system with TANGO_HOST={sandbox.tango_host}", file=out)
        print("  MyServer/hw runs HwDevice foo/bar/hw", file=out)
        hw = sandbox.proxy("foo/bar/hw")
        events: queue.Queue[tango.EventData] = queue.Queue()
        ids = [
            hw.subscribe_event(name, tango.EventType.CHANGE_EVENT, _enqueue(events))
            for name in ("mode", "position")
        ]
        try:
            hw.Scan()
            print(f"Called foo/bar/hw Scan(): a {SCAN_SECONDS:g} s scan at 10 Hz", file=out)
            _print_until_idle(events, out)
            _print_counters(sandbox, out)
        finally:
            for subscription in ids:
                hw.unsubscribe_event(subscription)
        print("\nHwDevice's own log:", file=out)
        for line in sandbox.server_output("MyServer/hw").splitlines():
            print(f"  {line}", file=out)


def _enqueue(events: queue.Queue[tango.EventData]) -> Callable[[tango.EventData], None]:
    """A Tango callback that only hands the event to the main thread."""
    return events.put


def _print_until_idle(events: queue.Queue[tango.EventData], out: TextIO) -> None:
    scanning_seen = False
    subscribed: set[str] = set()
    while True:
        try:
            event = events.get(timeout=EVENT_WAIT_SECONDS)
        except queue.Empty:
            raise TimeoutError(
                f"no event from foo/bar/hw for {EVENT_WAIT_SECONDS:g} s, although its scan "
                f"lasts {SCAN_SECONDS:g} s; run `milonga sandbox` and start the server by hand "
                "to see its log"
            ) from None
        attr = event.attr_name.rsplit("/", 1)[-1]
        if event.err or event.attr_value is None:
            print(f"  event {attr:<8} error: {event.errors[0].desc}", file=out)
            continue
        value = _label(attr, event.attr_value.value)
        note = "" if attr in subscribed else "  (current value, sent on subscription)"
        subscribed.add(attr)
        print(f"  event {attr:<8} {value}{note}", file=out)
        if attr == "mode" and value == "SCANNING":
            scanning_seen = True
        if attr == "mode" and value == "IDLE" and scanning_seen:
            return


def _label(attr: str, value: Any) -> str:
    if attr == "mode":
        return Mode(value).name
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _print_counters(sandbox: TangoSandbox, out: TextIO) -> None:
    server = json.loads(sandbox.proxy("dserver/MyServer/hw").command_inout("QueryEventSystem"))
    client = json.loads(tango.ApiUtil.instance().query_event_system())
    print("\nWhat the event system counted (QueryEventSystem):", file=out)
    for stream, counter in sorted(server["server"]["event_counters"].items()):
        print(f"  server  {_short(stream)}: {counter} is the last pushed counter", file=out)
    for topic, callback in sorted(client["client"]["event_callbacks"].items()):
        print(
            f"  client  {_short(topic)}: {callback['event_count']} events processed, "
            f"{callback['missed_event_count']} missed",
            file=out,
        )


def _short(name: str) -> str:
    """``tango://host:port/dev/attr.kind`` without the ``tango://host:port/`` prefix."""
    return name.split("/", 3)[-1] if name.startswith("tango://") else name
