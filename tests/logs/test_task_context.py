"""A request's id follows the work it causes: its batch's run and that run's promotion, through the real worker."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app.logging_setup import ContextFilter
from tests.conftest import ApiClient, Gate, wait_for


def _create(api: ApiClient, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/batches", body, headers={"X-Request-ID": request_id})
    assert response.status_code == 201, response.get_json()
    assert response.headers["X-Request-ID"] == request_id
    return response.get_json()


def _line(caplog: pytest.LogCaptureFixture, message: str) -> logging.LogRecord:
    def found() -> logging.LogRecord | None:
        return next((r for r in list(caplog.records) if r.getMessage() == message), None)

    return wait_for(found, timeout=30)


def test_the_run_and_its_promotion_log_with_the_creating_requests_id(
    api: ApiClient, celery_worker: Any, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasks")
    caplog.handler.addFilter(ContextFilter())  # stamps each record in the worker's thread, as it is logged
    profile_ids = api.profiles(1)
    first = _create(api, "create-first", {"name": "a", "profile_ids": profile_ids, "processor": gate.name})
    second = _create(api, "create-second", {"name": "b", "profile_ids": profile_ids, "processor": "noop"})
    assert (first["status"], second["status"]) == ("in_progress", "queued")
    gate.open()

    run = _line(caplog, f"batch {first['id']}: run done")
    assert (run.request_id, run.batch_id, run.actor) == ("create-first", first["id"], None)  # type: ignore[attr-defined]
    assert run.task_id  # type: ignore[attr-defined]
    promotion = _line(caplog, f"queue: promoted batch {second['id']}")
    assert promotion.request_id == "create-first"  # type: ignore[attr-defined]
    assert promotion.task_id not in (None, run.task_id)  # type: ignore[attr-defined]
    # The promoted batch's run is not the first request's work: the id does not ride down the queue.
    next_run = _line(caplog, f"batch {second['id']}: run done")
    assert (next_run.request_id, next_run.batch_id) == (None, second["id"])  # type: ignore[attr-defined]


def test_a_start_requests_id_reaches_the_run_it_starts(
    api: ApiClient, celery_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasks")
    caplog.handler.addFilter(ContextFilter())
    profile_ids = api.profiles(1)
    assert api.post("/queue/drain").status_code == 200  # nothing runs: the queue pauses at once
    queued = _create(api, "create-while-paused", {"name": "a", "profile_ids": profile_ids, "processor": "noop"})
    assert queued["status"] == "queued"
    response = api.post("/queue/start", headers={"X-Request-ID": "start-it"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "start-it"
    run = _line(caplog, f"batch {queued['id']}: run done")
    assert run.request_id == "start-it"  # type: ignore[attr-defined]
