"""Testing event-driven Tango code with pytest: milonga's plugin and its parts.

Installing milonga registers the plugin (`milonga.testing.plugin`, through the ``pytest11``
entry point): the fixtures ``tango_sandbox``, ``sandbox_servers``, ``event_system_change``
and ``tango_events``, and the event-system health check.  See docs/testing.md.

The names below are imported on first use, so that loading the plugin imports no Tango:

- `TangoEvents`, `RecordedEvent`, `EventAssertionError`: the ``tango_events`` recorder;
- `SandboxServers`: what ``sandbox_servers`` gives;
- `EventSystemChange`: what ``event_system_change`` gives;
- `wait_until`, `WAIT_SECONDS`: waiting for what no event reports, such as a server's log.
"""

from typing import TYPE_CHECKING

from milonga._lazy import lazy_attributes

if TYPE_CHECKING:
    from milonga.testing.event_system import EventSystemChange
    from milonga.testing.events import RecordedEvent
    from milonga.testing.recorder import EventAssertionError, TangoEvents
    from milonga.testing.servers import SandboxServers
    from milonga.testing.waiting import WAIT_SECONDS, wait_until

_SOURCES = {
    "EventAssertionError": "milonga.testing.recorder",
    "EventSystemChange": "milonga.testing.event_system",
    "RecordedEvent": "milonga.testing.events",
    "SandboxServers": "milonga.testing.servers",
    "TangoEvents": "milonga.testing.recorder",
    "WAIT_SECONDS": "milonga.testing.waiting",
    "wait_until": "milonga.testing.waiting",
}

__all__ = [
    "WAIT_SECONDS",
    "EventAssertionError",
    "EventSystemChange",
    "RecordedEvent",
    "SandboxServers",
    "TangoEvents",
    "wait_until",
]

if not TYPE_CHECKING:  # mypy reads the imports above, and still flags unknown names
    __getattr__ = lazy_attributes(__name__, _SOURCES)
