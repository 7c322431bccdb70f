"""Batches: create, list, read, items, logs, and the queue controls on one batch."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request, url_for

from app.access import requires
from app.api import bp
from app.api.bodies import json_body, load_args, load_body, page_body
from app.downloads import attachment
from app.errors import InvalidInput
from app.models import Role
from app.schemas.batches import (
    BatchCreate,
    BatchListArgs,
    BatchOut,
    CallbackAttemptOut,
    ItemOut,
    LogArgs,
    LogOut,
    MoveBody,
    ResumeBody,
)
from app.schemas.common import PageArgs
from app.services import batches, callbacks, logs, queue_manager
from app.services.snapshots import read_snapshot

batch_out = BatchOut()

# The length of the column that keeps the key.
MAX_IDEMPOTENCY_KEY = 200


def idempotency_key() -> str | None:
    """Return the request's Idempotency-Key, refusing one too long to keep."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(
            "the Idempotency-Key is too long",
            {"Idempotency-Key": [f"at most {MAX_IDEMPOTENCY_KEY} characters"]},
        )
    return key


@bp.post("/batches")
@requires(Role.OPERATOR)
def create_batch() -> tuple[dict[str, Any], int, dict[str, str]]:
    raw = json_body()
    data = BatchCreate().load(raw)
    key = idempotency_key()
    batch, created = batches.create_batch(data, g.actor, idempotency_key=key, raw_body=raw, token_id=g.get("token_id"))
    location = url_for("api.get_batch", batch_id=batch.id)
    return batch_out.dump(batch), 201 if created else 200, {"Location": location}


@bp.get("/batches")
@requires(Role.VIEWER)
def list_batches() -> dict[str, Any]:
    args = load_args(BatchListArgs())
    filters = batches.BatchFilter(
        q=args.get("q"),
        statuses=tuple(args.get("status", ())),
        processor=args.get("processor"),
        created_by=args.get("created_by"),
        created_after=args.get("created_after"),
        created_before=args.get("created_before"),
    )
    read_snapshot()
    return page_body(batches.list_batches(args["page"], args["per_page"], filters), batch_out)


@bp.get("/batches/<int:batch_id>")
@requires(Role.VIEWER)
def get_batch(batch_id: int) -> dict[str, Any]:
    read_snapshot()
    return batch_out.dump(batches.get_batch(batch_id))


@bp.get("/batches/<int:batch_id>/items")
@requires(Role.VIEWER)
def list_items(batch_id: int) -> dict[str, Any]:
    args = load_args(PageArgs())
    return page_body(batches.list_items(batch_id, args["page"], args["per_page"]), ItemOut())


@bp.get("/batches/<int:batch_id>/logs")
@requires(Role.VIEWER)
def list_logs(batch_id: int) -> dict[str, Any]:
    args = load_args(LogArgs())
    window = logs.Window(level=args.get("level"), after=args.get("after"), before=args.get("before"))
    return page_body(logs.list_logs(batch_id, window, args["page"], args["per_page"]), LogOut())


@bp.get("/batches/<int:batch_id>/callbacks")
@requires(Role.VIEWER)
def list_callbacks(batch_id: int) -> dict[str, Any]:
    args = load_args(PageArgs())
    return page_body(callbacks.list_attempts(batch_id, args["page"], args["per_page"]), CallbackAttemptOut())


@bp.get("/batches/<int:batch_id>/logs.txt", defaults={"fmt": "txt"})
@bp.get("/batches/<int:batch_id>/logs.jsonl", defaults={"fmt": "jsonl"})
@requires(Role.VIEWER)
def download_logs(batch_id: int, fmt: str) -> Response:
    return attachment(logs.export(batch_id, fmt))


@bp.post("/batches/<int:batch_id>/stop")
@requires(Role.OPERATOR)
def stop_batch(batch_id: int) -> dict[str, Any]:
    return batch_out.dump(queue_manager.stop(batch_id, g.actor))


@bp.post("/batches/<int:batch_id>/cancel")
@requires(Role.OPERATOR)
def cancel_batch(batch_id: int) -> dict[str, Any]:
    return batch_out.dump(queue_manager.cancel(batch_id, g.actor))


@bp.post("/batches/<int:batch_id>/move")
@requires(Role.OPERATOR)
def move_batch(batch_id: int) -> dict[str, Any]:
    data = load_body(MoveBody())
    return batch_out.dump(queue_manager.move(batch_id, data["position"], g.actor))


@bp.post("/batches/<int:batch_id>/resume")
@requires(Role.OPERATOR)
def resume_batch(batch_id: int) -> dict[str, Any]:
    # The body is optional: none at all means "at the end".
    data = ResumeBody().load(json_body() if request.get_data() else {})
    return batch_out.dump(queue_manager.resume(batch_id, g.actor, data.get("position")))


@bp.post("/batches/<int:batch_id>/retry")
@requires(Role.OPERATOR)
def retry_batch(batch_id: int) -> tuple[dict[str, Any], int, dict[str, str]]:
    batch = queue_manager.retry(batch_id, g.actor)
    return batch_out.dump(batch), 201, {"Location": url_for("api.get_batch", batch_id=batch.id)}
