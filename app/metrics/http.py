"""Each request's count and latency, by method, route (the URL rule, never the raw path) and status.

Labelled by the rule (`/api/v1/batches/<int:batch_id>`), so a thousand batch ids
stay one series; an unmatched path is `unmatched`. /metrics itself is left out:
the scraper's own requests say nothing about the service. A Server-Sent Events
stream is timed to its opening (the view returns its response at once; the
stream's minutes are spent after), so streams don't distort the latency.
"""

from __future__ import annotations

import time

from flask import Flask, Response, request

from app import metrics

_STARTED = "batchq.metrics.started"
# The endpoint of /metrics (app/metrics/view.py).
SCRAPE_ENDPOINT = "metrics.scrape"


def init_app(app: Flask) -> None:
    """Time every request of the app."""
    app.before_request(_start)
    app.after_request(_observe)


def _start() -> None:
    request.environ[_STARTED] = time.perf_counter()


def _observe(response: Response) -> Response:
    started = request.environ.get(_STARTED)
    if started is None or request.endpoint == SCRAPE_ENDPOINT:
        return response
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    labels = (request.method, route, str(response.status_code))
    metrics.HTTP_REQUESTS.labels(*labels).inc()
    metrics.HTTP_DURATION.labels(*labels).observe(time.perf_counter() - started)
    return response
