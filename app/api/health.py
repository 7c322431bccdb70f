"""GET /health: read from recorded state (heartbeats, one cached broker probe), never a broadcast."""

from __future__ import annotations

from typing import Any

from app.access import public
from app.api import bp
from app.extensions import db
from app.schemas.queue import HealthOut
from app.services.health import read_health

health_out = HealthOut()


@bp.get("/health")
@public
def health() -> tuple[dict[str, Any], int]:
    state = read_health()
    db.session.rollback()
    body = health_out.dump(
        {
            "status": "ok" if state.healthy else "degraded",
            "database": "ok" if state.database else "unreachable",
            "broker": "ok" if state.broker else "unreachable",
            "workers": [worker.name for worker in state.workers],
            "beat": "ok" if state.beat_alive else "missing",
            "worker_details": state.workers,
        }
    )
    return body, 200 if state.healthy else 503
