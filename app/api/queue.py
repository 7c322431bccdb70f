"""The queue: GET /queue, POST /queue/start."""

from __future__ import annotations

from typing import Any

from flask import g

from app.api import bp
from app.schemas.queue import QueueOut
from app.services import queue_manager
from app.services.queue_manager import QueueSnapshot
from app.services.snapshots import read_snapshot


def queue_body(snapshot: QueueSnapshot) -> dict[str, Any]:
    return QueueOut().dump(
        {
            "paused": snapshot.paused,
            "paused_by": snapshot.paused_by,
            "paused_at": snapshot.paused_at,
            "running": snapshot.running,
            "queued_count": snapshot.queued_count,
            "start_enabled": snapshot.start_enabled,
        }
    )


@bp.get("/queue")
def get_queue() -> dict[str, Any]:
    read_snapshot()
    return queue_body(queue_manager.snapshot())


@bp.post("/queue/start")
def start_queue() -> dict[str, Any]:
    return queue_body(queue_manager.start(g.actor))
