"""GET /metrics: this host's counters and histograms and the database's gauges, in Prometheus's text format.

Readable with any valid API token (Bearer), or without one from an address in
METRICS_ALLOWED_HOSTS (127.0.0.1 by default, so `curl localhost:8000/metrics`
answers on the machine itself). Outside /api/v1: not rate-limited (a scraper
every few seconds must never be refused), no CSRF (a GET that changes nothing).
"""

from __future__ import annotations

import ipaddress

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest

from app import metrics
from app.access import public
from app.config import Settings
from app.metrics.collector import HostCollector
from app.metrics.gauges import DatabaseGauges, read_gauges
from app.services.accounts import authenticate_token

bp = Blueprint("metrics", __name__)

REFUSED = "a valid 'Authorization: Bearer <token>' header, or an address in METRICS_ALLOWED_HOSTS, is required\n"


@bp.get("/metrics")
@public  # its own rule below: a token or an allowed address
def scrape() -> Response:
    """Every process's values on this host, added up, and the gauges read now."""
    if not _may_read():
        return Response(REFUSED, status=401, mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry()
    HostCollector(registry, path=str(metrics.METRICS_DIR))
    registry.register(DatabaseGauges(read_gauges()))
    # The classic text format (0.0.4), which every Prometheus reads; all our names are plain.
    return Response(generate_latest(registry), status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _may_read() -> bool:
    """A Bearer header must hold a valid token; without one, the client's address must be allowed."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return authenticate_token(token.strip()) is not None
    settings: Settings = current_app.config["SETTINGS"]
    return address_allowed(request.remote_addr, settings.metrics_allowed_hosts)


def address_allowed(address: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether the address is one of the allowed addresses or CIDRs."""
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(entry, strict=False) for entry in allowed)
