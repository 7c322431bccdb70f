"""Creations at once through the API: positions 1..n in the order of creation, at most one batch running.

Each creation locks the queue, writes its batch and commits in one round trip
(app/services/queue_create.py); these requests race for that lock from 16
threads, each with a client of its own, released at the same moment.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import Batch
from tests.conftest import ApiClient, queue_violations, run_in_threads

CLIENTS = 16


def _create_at_once(app: Flask, api: ApiClient, profile_ids: list[int]) -> list[dict[str, Any]]:
    token = api.headers["Authorization"].removeprefix("Bearer ")
    clients = [ApiClient(app.test_client(), token) for _ in range(CLIENTS)]

    def create(index: int) -> dict[str, Any]:
        response = clients[index].post(
            "/batches", {"name": f"b{index}", "processor": "noop", "parameters": {}, "profile_ids": profile_ids}
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return run_in_threads(CLIENTS, create)


def _stored(app: Flask) -> list[Any]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Batch.id, Batch.status, Batch.queue_position, Batch.total_items).order_by(Batch.id)
        ).all()
        db.session.remove()
    return rows


@pytest.mark.parametrize("paused", [False, True], ids=["idle queue", "paused queue"])
def test_16_concurrent_creations_take_positions_in_creation_order_with_one_running(
    app: Flask, api: ApiClient, profile_ids: list[int], sent: list[Any], paused: bool
) -> None:
    if paused:
        assert api.post("/queue/drain").status_code == 200  # nothing runs: paused at once
    answers = _create_at_once(app, api, profile_ids)

    rows = _stored(app)
    assert len(rows) == CLIENTS and all(row.total_items == len(profile_ids) for row in rows)
    running = [row.id for row in rows if row.status == "in_progress"]
    # No worker runs here: the first batch created is the one started (idle), or none is (paused).
    assert running == ([] if paused else [rows[0].id])
    queued = [row for row in rows if row.status == "queued"]
    # In creation (id) order, the queued batches hold positions 1..n with no gap.
    assert [row.queue_position for row in queued] == list(range(1, len(queued) + 1))
    # Each answer gave the batch's position as its creation committed: the one it still holds when
    # paused; idle, one more while the first batch was still waiting for its promotion.
    now_at = {row.id: row.queue_position for row in rows}
    told = {answer["id"]: answer["queue_position"] for answer in answers}
    assert told.keys() == now_at.keys()
    for batch_id, position in told.items():
        assert position in ((now_at[batch_id],) if paused else (now_at[batch_id], now_at[batch_id] + 1))
    assert len(sent) == (0 if paused else 1)
    with app.app_context():
        assert queue_violations() == []
