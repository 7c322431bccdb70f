"""GET /health: 200 with the database, the broker and a live worker; 503 "degraded" otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.config import Settings
from app.extensions import db

HEALTH_KEYS = {"status", "database", "broker", "workers"}


@pytest.fixture
def app_without_database(app: Flask, settings: Settings) -> Iterator[Flask]:
    """A second app whose database URL points at a closed port."""
    broken = create_app(
        replace(settings, database_url="postgresql+psycopg://postgres@127.0.0.1:1/nothing"),
        TESTING=True,
    )
    # create_app makes its Celery app the process default; give it back to the session's app.
    app.extensions["celery"].set_default()
    broken.extensions["celery"].conf.broker_transport_options = app.extensions["celery"].conf.broker_transport_options
    yield broken
    with broken.app_context():
        db.engine.dispose()


def test_health_with_database_broker_and_worker_is_200_ok(app: Flask, celery_worker: Any) -> None:
    response = app.test_client().get("/api/v1/health")
    body = response.get_json()
    assert (response.status_code, body["status"]) == (200, "ok"), body
    assert set(body) == HEALTH_KEYS
    assert (body["database"], body["broker"]) == ("ok", "ok")
    assert isinstance(body["workers"], list) and all(isinstance(name, str) for name in body["workers"])
    assert celery_worker.hostname in body["workers"]


def test_health_with_the_database_unreachable_is_503_degraded(
    app_without_database: Flask,
) -> None:
    response = app_without_database.test_client().get("/api/v1/health")
    body = response.get_json()
    assert response.status_code == 503, body
    assert set(body) == HEALTH_KEYS
    assert body["status"] == "degraded"
    assert body["database"] != "ok"
    assert body["broker"] == "ok"
    assert isinstance(body["workers"], list)
