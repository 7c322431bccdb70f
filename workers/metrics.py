"""A worker host's own /metrics, on WORKER_METRICS_PORT: for a host that runs workers but no web process.

It serves the counters and histograms of every process of the host (the files
in METRICS_DIR: the worker's pool children, beat); the database's gauges are
the web's to serve, the same from any host. Served from the worker's main
process (a thread of prometheus_client's), only when the port is set, on every
address: protect it as the network allows, since it has no token check.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from app import metrics
from app.metrics.collector import HostCollector

log = logging.getLogger(__name__)


def serve(port: int | None) -> None:
    """Start serving on `port` (None: do nothing)."""
    if port is None:
        return
    registry = CollectorRegistry()
    HostCollector(registry, path=str(metrics.METRICS_DIR))
    start_http_server(port, registry=registry)
    log.info("metrics of this host served on port %s", port)
