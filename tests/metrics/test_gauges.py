"""The gauges, read from the database at scrape time: statuses, the queue, its pause, the running batch, liveness."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import text

from app.extensions import db
from tests.metrics.scrapes import samples, value

# One batch per status but queued (three of those) and a running one started a minute ago.
_BATCHES = """
    INSERT INTO batches (name, status, queue_rank, processor, parameters, profile_ids, created_at, started_at,
        total_items, succeeded_items, failed_items, run_attempts)
    VALUES
        ('q1', 'queued', 10, 'noop', '{}', '{}', now(), NULL, 0, 0, 0, 0),
        ('q2', 'queued', 20, 'noop', '{}', '{}', now(), NULL, 0, 0, 0, 0),
        ('q3', 'queued', 30, 'noop', '{}', '{}', now(), NULL, 0, 0, 0, 0),
        ('r', 'in_progress', NULL, 'noop', '{}', '{}', now(), now() - interval '60 seconds', 0, 0, 0, 0),
        ('d1', 'done', NULL, 'noop', '{}', '{}', now(), now(), 0, 0, 0, 0),
        ('d2', 'done', NULL, 'noop', '{}', '{}', now(), now(), 0, 0, 0, 0),
        ('f', 'failed', NULL, 'noop', '{}', '{}', now(), now(), 0, 0, 0, 0),
        ('c', 'cancelled', NULL, 'noop', '{}', '{}', now(), NULL, 0, 0, 0, 0)
"""


def _scrape(app: Flask) -> dict:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def test_gauges_count_batches_by_status_and_the_queue(app: Flask, without_workers: None) -> None:
    with app.app_context():
        db.session.execute(text(_BATCHES))
        db.session.commit()
    found = _scrape(app)
    expected = {"queued": 3, "in_progress": 1, "stopping": 0, "done": 2, "failed": 1, "stopped": 0, "cancelled": 1}
    assert {status: value(found, "batchq_batches", status=status) for status in expected} == expected
    assert value(found, "batchq_queue_length") == 3
    assert value(found, "batchq_queue_paused") == 0
    assert 59 <= value(found, "batchq_running_batch_age_seconds") < 120


def test_gauges_of_an_empty_paused_queue(app: Flask, without_workers: None) -> None:
    with app.app_context():
        db.session.execute(text("UPDATE queue_state SET paused = true, paused_by = 'test', paused_at = now()"))
        db.session.commit()
    found = _scrape(app)
    assert value(found, "batchq_queue_paused") == 1
    assert value(found, "batchq_queue_length") == 0
    assert value(found, "batchq_running_batch_age_seconds") == 0
    assert value(found, "batchq_batches", status="queued") == 0  # every status has its series, 0 included


def test_gauges_read_workers_and_beat_from_their_heartbeats(app: Flask, without_workers: None) -> None:
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO service_processes (name, kind, host, pid, queues, started_at, last_seen_at) VALUES"
                " ('celery@a', 'worker', 'a', 1, '{}', now(), now()),"
                " ('celery@b', 'worker', 'b', 2, '{}', now(), now()),"
                " ('celery@gone', 'worker', 'c', 3, '{}', now(), now() - interval '1 hour'),"
                " ('beat@a:9', 'beat', 'a', 9, '{}', now(), now() - interval '42 seconds')"
            )
        )
        db.session.commit()
    found = _scrape(app)
    assert value(found, "batchq_workers_alive") == 2
    assert 42 <= value(found, "batchq_beat_last_seen_seconds") < 60


def test_no_beat_ever_seen_leaves_its_gauge_out(app: Flask, without_workers: None) -> None:
    found = _scrape(app)
    assert value(found, "batchq_workers_alive") == 0
    assert not any(name == "batchq_beat_last_seen_seconds" for name, _ in found)
