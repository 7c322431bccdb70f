"""GET /health: database, broker and live workers, each checked with a short timeout."""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import text

from app.api import bp
from app.extensions import db

PING_TIMEOUT = 0.5


def _database_ok() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        return True
    except Exception:  # noqa: BLE001  (any failure means: not healthy)
        db.session.rollback()
        return False


def _broker_ok() -> bool:
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=PING_TIMEOUT)
        return True
    except Exception:  # noqa: BLE001  (any failure means: not healthy)
        return False


def _live_workers() -> list[str]:
    celery = current_app.extensions["celery"]
    try:
        replies = celery.control.ping(timeout=PING_TIMEOUT) or []
    except Exception:  # noqa: BLE001  (any failure means: not healthy)
        return []
    return sorted(name for reply in replies for name in reply)


@bp.get("/health")
def health() -> tuple[dict[str, Any], int]:
    database, broker = _database_ok(), _broker_ok()
    workers = _live_workers() if broker else []
    healthy = database and broker and bool(workers)
    body = {
        "status": "ok" if healthy else "degraded",
        "database": "ok" if database else "unreachable",
        "broker": "ok" if broker else "unreachable",
        "workers": workers,
    }
    return body, 200 if healthy else 503
