"""The queue: GET /queue, POST /queue/start and /queue/drain, the failure policy."""

from __future__ import annotations

from typing import Any

from flask import g

from app.access import requires
from app.api import bp
from app.api.bodies import load_body
from app.models import Role
from app.schemas.queue import PolicyBody, QueueOut
from app.services import queue_manager
from app.services.queue_manager import QueueSnapshot
from app.services.queue_tx import FailurePolicy
from app.services.snapshots import read_snapshot


def queue_body(snapshot: QueueSnapshot) -> dict[str, Any]:
    return QueueOut().dump(
        {
            "paused": snapshot.paused,
            "paused_by": snapshot.paused_by,
            "paused_at": snapshot.paused_at,
            "paused_reason": snapshot.paused_reason,
            "draining": snapshot.draining,
            "running": snapshot.running,
            "queued_count": snapshot.queued_count,
            "start_enabled": snapshot.start_enabled,
        }
    )


@bp.get("/queue")
@requires(Role.VIEWER)
def get_queue() -> dict[str, Any]:
    read_snapshot()
    return queue_body(queue_manager.snapshot())


@bp.post("/queue/start")
@requires(Role.OPERATOR)
def start_queue() -> dict[str, Any]:
    return queue_body(queue_manager.start(g.actor))


@bp.post("/queue/drain")
@requires(Role.OPERATOR)
def drain_queue() -> dict[str, Any]:
    return queue_body(queue_manager.drain(g.actor))


def policy_body(policy: FailurePolicy) -> dict[str, Any]:
    return PolicyBody().dump({"on_failure": policy.on_failure, "pause_after_failures": policy.pause_after_failures})


@bp.get("/queue/policy")
@requires(Role.VIEWER)
def get_policy() -> dict[str, Any]:
    return policy_body(queue_manager.failure_policy())


@bp.put("/queue/policy")
@requires(Role.ADMIN)
def put_policy() -> dict[str, Any]:
    data = load_body(PolicyBody())
    policy = FailurePolicy(data["on_failure"], data["pause_after_failures"])
    return policy_body(queue_manager.set_failure_policy(policy, g.actor))
