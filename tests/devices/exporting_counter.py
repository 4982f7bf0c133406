"""A Counter whose server exports its own event system to Prometheus, as a user would.

The module registers a `ProcessEventSystemCollector` when it is imported, before the
device server starts, and scrapes it once then: `early_servers` tells the ``server``
labels of that scrape.  `ExportingCounter` serves the registry over HTTP on a free port
of 127.0.0.1, which its `metrics_port` attribute tells; `delete_device` stops serving.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from tango.server import attribute

from milonga.prometheus import ProcessEventSystemCollector
from tests.devices.counter import Counter

REGISTRY = CollectorRegistry(auto_describe=True)
COLLECTOR = ProcessEventSystemCollector()
REGISTRY.register(COLLECTOR)
EARLY_SERVERS = sorted(
    sample.labels["server"]
    for family in COLLECTOR.collect()
    if family.name == "tango_server_up"
    for sample in family.samples
)


class ExportingCounter(Counter):
    """A Counter serving its server's ``/metrics``."""

    def init_device(self) -> None:
        super().init_device()
        self._http, self._thread = start_http_server(0, "127.0.0.1", REGISTRY)

    def delete_device(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    @attribute(dtype=int)
    def metrics_port(self) -> int:
        return int(self._http.server_port)

    @attribute(dtype=str)
    def early_servers(self) -> str:
        """The ``server`` labels of the scrape taken before the server started."""
        return " ".join(EARLY_SERVERS)
