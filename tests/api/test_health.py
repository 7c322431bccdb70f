"""GET /health: read from recorded heartbeats; 200 with the database, the broker and a live worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.config import Settings
from app.extensions import db
from app.services import liveness
from app.services.health import BROKER_PROBE_TTL, BrokerProbe
from app.services.liveness import ProcessRecord

HEALTH_KEYS = {"status", "database", "broker", "workers", "beat", "worker_details"}


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


@pytest.fixture
def records(app: Flask) -> Iterator[Any]:
    """Write (and afterwards remove) liveness records as other processes would."""
    names: list[str] = []

    def write(record: ProcessRecord, seconds_ago: float = 0.0) -> None:
        with app.app_context(), db.engine.connect() as connection:
            liveness.record(connection, record)
            connection.execute(
                db.text(
                    "UPDATE service_processes SET last_seen_at = now() - make_interval(secs => :ago) WHERE name = :n"
                ),
                {"ago": seconds_ago, "n": record.name},
            )
            connection.commit()
        names.append(record.name)

    yield write
    with app.app_context(), db.engine.connect() as connection:
        for name in names:
            liveness.forget(connection, name)
        connection.commit()


def test_health_with_database_broker_and_worker_is_200_ok_with_its_details(app: Flask, celery_worker: Any) -> None:
    response = app.test_client().get("/api/v1/health")
    body = response.get_json()
    assert (response.status_code, body["status"]) == (200, "ok"), body
    assert set(body) == HEALTH_KEYS
    assert (body["database"], body["broker"]) == ("ok", "ok")
    assert celery_worker.hostname in body["workers"]
    details = next(d for d in body["worker_details"] if d["name"] == celery_worker.hostname)
    assert (details["pool"], details["concurrency"], details["queues"]) == ("thread", 4, ["batches", "control"])
    assert details["batch"] is None and details["host"] and details["last_seen"]


def test_health_without_a_beat_is_still_200_and_says_beat_missing(app: Flask, celery_worker: Any) -> None:
    body = app.test_client().get("/api/v1/health").get_json()
    assert (body["status"], body["beat"]) == ("ok", "missing")


def test_health_counts_a_beat_heard_from_recently_and_not_one_gone_silent(
    app: Flask, celery_worker: Any, records: Any
) -> None:
    records(ProcessRecord(name="beat@old:1", kind="beat", host="old", pid=1), seconds_ago=60)
    assert app.test_client().get("/api/v1/health").get_json()["beat"] == "missing"
    records(ProcessRecord(name="beat@new:2", kind="beat", host="new", pid=2))
    assert app.test_client().get("/api/v1/health").get_json()["beat"] == "ok"


def test_health_ignores_a_worker_whose_heartbeats_stopped_three_beats_ago(
    app: Flask, celery_worker: Any, records: Any
) -> None:
    stale = liveness.MISSED_BEATS * liveness.HEARTBEAT_SECONDS + 0.5
    records(ProcessRecord(name="celery@killed", kind="worker", host="gone", pid=7), seconds_ago=stale)
    records(ProcessRecord(name="celery@fresh", kind="worker", host="here", pid=8, pool="prefork", concurrency=3))
    body = app.test_client().get("/api/v1/health").get_json()
    assert "celery@killed" not in body["workers"]
    assert "celery@fresh" in body["workers"]


def test_health_without_a_live_worker_is_503_until_one_beats_again(app: Flask, celery_worker: Any) -> None:
    from workers.liveness import ProcessLife

    life = celery_worker.liveness
    life.stop()  # a graceful stop removes the worker's record
    try:
        response = app.test_client().get("/api/v1/health")
        body = response.get_json()
        assert (response.status_code, body["status"], body["workers"]) == (503, "degraded", []), body
        assert (body["database"], body["broker"]) == ("ok", "ok")
    finally:
        celery_worker.liveness = ProcessLife(app, life.record, repair_every=None).start()
    assert app.test_client().get("/api/v1/health").status_code == 200


def test_health_answers_quickly_without_asking_the_workers(
    app: Flask, celery_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quick by construction, and counted rather than timed: no request broadcasts to the workers (a ping
    waited 0.5 s per request), and the broker is probed at most once a second, whatever the requests' pace."""
    from celery.app.control import Control

    broadcasts: list[str] = []
    monkeypatch.setattr(Control, "broadcast", lambda self, command, *args, **kwargs: broadcasts.append(command))
    probes: list[float] = []
    probe = BrokerProbe._probe

    def counted(self: BrokerProbe) -> bool:
        probes.append(time.monotonic())
        return probe(self)

    monkeypatch.setattr(BrokerProbe, "_probe", counted)
    client = app.test_client()
    began = time.monotonic()
    for _ in range(20):
        assert client.get("/api/v1/health").status_code == 200
    elapsed = time.monotonic() - began
    assert broadcasts == []  # ping, inspect and every other remote control go through Control.broadcast
    assert len(probes) <= 1 + elapsed / BROKER_PROBE_TTL, (len(probes), elapsed)


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


@pytest.mark.parametrize("answers, reachable", [([False, True], True), ([False, False], False), ([True], True)])
def test_broker_probe_counts_a_failure_only_when_a_second_probe_confirms_it(
    app: Flask, monkeypatch: pytest.MonkeyPatch, answers: list[bool], reachable: bool
) -> None:
    left = list(answers)
    monkeypatch.setattr(BrokerProbe, "_probe", lambda self: left.pop(0))
    assert BrokerProbe(app.extensions["celery"]).ok() is reachable
    assert left == []
