"""Live updates: Server-Sent Events fed by the per-process Redis subscriber."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app

from app.live.health_watch import HealthWatch
from app.live.hub import Hub
from app.live.recent_sessions import RecentSessions
from app.live.shared_render import SharedRenders

bp = Blueprint("live", __name__)

# Defaults; tests and deployments may override them in app.config.
DEFAULTS = {
    # Streams one web process holds; beyond it the stream answers 503 and the page polls.
    "LIVE_MAX_STREAMS": 500,
    # A comment line this often keeps proxies from closing an idle stream.
    "LIVE_HEARTBEAT_SECONDS": 15.0,
    # After a write, a stream waits this long and sends what came meanwhile in one write (app/live/streams.py).
    "LIVE_BURST_SECONDS": 0.25,
    # Streams end after this long; the browser reconnects (with Last-Event-ID) at once.
    "LIVE_STREAM_SECONDS": 300.0,
    # How often a process with open streams looks at the service's health (the banner).
    "LIVE_HEALTH_SECONDS": 1.0,
    # The longest a render of the table region is handed to other viewers (app/live/shared_render.py).
    "LIVE_SHARED_RENDER_SECONDS": 1.0,
    # The least time between two renders of one table region: changes faster than that share one.
    "LIVE_RENDER_GAP_SECONDS": 0.2,
    # How long a live re-fetch of the table takes its session as checked (app/live/recent_sessions.py).
    "LIVE_REFETCH_SESSION_SECONDS": 1.0,
}


def init_app(app: Flask) -> None:
    """Register the stream endpoint and this process's hub."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    live_hub = Hub(app.config["REDIS_URL"], app.config["EVENTS_CHANNEL"], int(app.config["LIVE_MAX_STREAMS"]))
    app.extensions["live_hub"] = live_hub
    app.extensions["health_watch"] = HealthWatch(app, live_hub, float(app.config["LIVE_HEALTH_SECONDS"]))
    app.extensions["table_renders"] = SharedRenders(
        max_age=float(app.config["LIVE_SHARED_RENDER_SECONDS"]), min_gap=float(app.config["LIVE_RENDER_GAP_SECONDS"])
    )
    app.extensions["refetch_sessions"] = RecentSessions(seconds=float(app.config["LIVE_REFETCH_SESSION_SECONDS"]))
    app.register_blueprint(bp)


def hub() -> Hub:
    """Return the current app's hub."""
    return current_app.extensions["live_hub"]


def shutdown_all(app: Flask) -> None:
    """End the app's open streams (called when the process is asked to stop)."""
    live_hub = app.extensions.get("live_hub")
    if live_hub is not None:
        live_hub.shutdown()


from app.live import streams  # noqa: E402, F401  (registers the stream routes on bp)
