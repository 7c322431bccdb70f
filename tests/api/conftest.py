"""API fixtures: runs are recorded instead of sent, so a batch stays where the test put it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.services import dispatch
from tests.conftest import TABLES, ApiClient

BATCH_KEYS = {
    "id": int,
    "name": str,
    "status": str,
    "queue_position": (int, type(None)),
    "processor": str,
    "parameters": dict,
    "profile_ids": list,
    "progress": dict,
    "created_at": str,
    "started_at": (str, type(None)),
    "finished_at": (str, type(None)),
    "error": (str, type(None)),
    "item_timeout": float,
    "callback_url": (str, type(None)),
    "retry_of": (int, type(None)),
    "waiting_code": (str, type(None)),
    "waiting_reason": (str, type(None)),
    "estimated_start_at": (str, type(None)),
}
PROFILE_KEYS = {"id": int, "name": str, "attributes": dict, "tags": list, "created_at": str}
LIST_KEYS = {"items": list, "total": int, "page": int, "per_page": int}


@pytest.fixture(autouse=True)
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record run dispatches: no worker moves a batch on while an API test looks at it."""
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(dispatch, "send_run", lambda batch_id, token: calls.append((batch_id, token)))
    return calls


@pytest.fixture
def profile_ids(api: ApiClient) -> list[int]:
    """Two profiles, p-0 and p-1."""
    return api.profiles(2)


@pytest.fixture
def counts(app: Flask) -> Iterator[Any]:
    """A function returning the row counts a refused request must leave unchanged."""

    def count() -> dict[str, int]:
        with app.app_context():
            row = db.session.execute(
                db.text(
                    "SELECT (SELECT count(*) FROM batches) AS batches,"
                    " (SELECT count(*) FROM batch_items) AS batch_items,"
                    " (SELECT count(*) FROM profiles) AS profiles,"
                    " (SELECT count(*) FROM batch_logs) AS batch_logs,"
                    " (SELECT string_agg(id || ':' || status || ':' || coalesce(queue_rank, -1), ','"
                    "   ORDER BY id) FROM batches) AS positions"
                )
            ).one()
            db.session.remove()
            return dict(row._mapping)

    yield count


def assert_shape(body: dict[str, Any], keys: dict[str, Any]) -> None:
    """Exactly these keys, each of these types (bool is not an int here)."""
    assert set(body) == set(keys), body
    for key, kind in keys.items():
        assert isinstance(body[key], kind), (key, body[key])
        assert not (isinstance(body[key], bool) and kind in (int, (int, type(None)))), (
            key,
            body[key],
        )


def assert_iso(value: str) -> datetime:
    """An ISO 8601 timestamp with its time zone."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def assert_batch(body: dict[str, Any]) -> None:
    """The contract's batch object."""
    assert_shape(body, BATCH_KEYS)
    assert body["status"] in {
        "queued",
        "in_progress",
        "stopping",
        "done",
        "failed",
        "stopped",
        "cancelled",
    }
    assert all(isinstance(pid, int) and not isinstance(pid, bool) for pid in body["profile_ids"])
    assert set(body["progress"]) == {"total", "succeeded", "failed", "pending"}
    assert all(type(value) is int for value in body["progress"].values()), body["progress"]
    for key in ("created_at", "started_at", "finished_at"):
        if body[key] is not None:
            assert_iso(body[key])


def assert_error(response: Any, status: int | tuple[int, ...], field: str | None = None) -> dict[str, Any]:
    """The contract's error object, with `field` named in `fields` when given."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (
        response.status_code,
        response.get_data(as_text=True)[:500],
    )
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "fields"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    if field is not None:
        assert isinstance(error.get("fields"), dict) and field in error["fields"], error
    return error


def running_and_queued(api: ApiClient, profile_ids: list[int], queued: int) -> list[dict[str, Any]]:
    """One running batch (no run is sent, so it stays in_progress) and `queued` behind it."""
    batches = [api.batch(profile_ids, name=f"b{index}") for index in range(queued + 1)]
    assert [b["status"] for b in batches] == ["in_progress"] + ["queued"] * queued
    return batches


@pytest.fixture
def clean(app: Flask) -> Iterator[None]:
    """Empty tables and an un-paused queue before the test; committed for real.

    Overrides the suite's TRUNCATE-based fixture for the API tests only: on a
    few rows, DELETE and a sequence reset take ~4 ms where TRUNCATE of six
    tables takes ~60 ms, which is most of an API test's time.
    """
    with app.app_context():
        for table in TABLES.split(", "):  # children before parents
            db.session.execute(db.text(f"DELETE FROM {table}"))
            db.session.execute(db.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 1, false)"))
        db.session.execute(
            db.text(
                "UPDATE queue_state SET paused = false, paused_by = NULL, paused_at = NULL, paused_reason = NULL,"
                " draining = false, drain_by = NULL, drain_at = NULL, on_failure = NULL,"
                " pause_after_failures = NULL, streak_from = NULL"
            )
        )
        db.session.commit()
        db.session.remove()
    yield
