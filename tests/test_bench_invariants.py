"""bench.invariants finds what it is meant to find: the soaks' and fault tests' checks are not vacuous."""

from __future__ import annotations

import pytest
from flask import Flask

from app.extensions import db
from bench.invariants import step_violations
from tests.conftest import ApiClient


def _sql(statement: str, **params: object) -> None:
    db.session.execute(db.text(statement), params)
    db.session.commit()


@pytest.fixture
def three_queued(app: Flask, api: ApiClient) -> list[int]:
    """Three batches of two noop items, left queued (the queue is paused: nothing runs them)."""
    with app.app_context():
        _sql("UPDATE queue_state SET paused = true, paused_by = 'tests', paused_at = now()")
    profiles = api.profiles(2)
    return [api.batch(profiles, name=f"b{index}")["id"] for index in range(3)]


def _end(batch_id: int, started: str, finished: str) -> None:
    _sql(
        "UPDATE batches SET status = 'done', queue_rank = NULL,"
        " started_at = now() + CAST(:s AS interval), finished_at = now() + CAST(:f AS interval) WHERE id = :id",
        id=batch_id,
        s=started,
        f=finished,
    )


def test_a_sound_queue_has_no_violations(app: Flask, three_queued: list[int]) -> None:
    first, second, _ = three_queued
    with app.app_context():
        _end(first, "0 s", "1 s")
        _end(second, "1 s", "2 s")
        assert step_violations() == []
        assert step_violations(all_ended=True) == [f"batch {three_queued[2]} (b2) ended queued"]


def test_queued_out_of_creation_order_is_found(app: Flask, three_queued: list[int]) -> None:
    first, _, last = three_queued
    with app.app_context():
        _sql(
            "UPDATE batches SET queue_rank = CASE id WHEN :a THEN b.last ELSE b.first END"
            " FROM (SELECT min(queue_rank) AS first, max(queue_rank) AS last FROM batches) b WHERE id IN (:a, :c)",
            a=first,
            c=last,
        )
        assert any("not in creation order" in line for line in step_violations())


def test_a_batch_started_before_the_previous_one_ended_is_found(app: Flask, three_queued: list[int]) -> None:
    first, second, _ = three_queued
    with app.app_context():
        _end(first, "0 s", "10 s")
        _end(second, "5 s", "12 s")
        assert f"batch {second} started" in " ".join(step_violations())


def test_a_later_batch_started_first_is_found(app: Flask, three_queued: list[int]) -> None:
    first, second, _ = three_queued
    with app.app_context():
        _end(second, "0 s", "1 s")
        _end(first, "2 s", "3 s")
        assert f"batch {first} started after batch {second}, created later" in step_violations()


@pytest.mark.parametrize("again", ["succeeded", "failed: boom"])
def test_an_item_that_ended_and_ran_again_is_found(app: Flask, three_queued: list[int], again: str) -> None:
    batch = three_queued[0]
    with app.app_context():
        for message in ("item 1/2 (p-0) succeeded", "item 2/2 (p-1) succeeded", f"item 1/2 (p-0) {again}"):
            _sql(
                "INSERT INTO batch_logs (batch_id, at, level, message) VALUES (:id, now(), 'info', :m)",
                id=batch,
                m=message,
            )
        found = [line for line in step_violations() if "ended 2 times" in line]
        assert found == [f"batch {batch} item 1 ended 2 times: item 1/2 (p-0) succeeded | item 1/2 (p-0) {again}"]


def _item_times(batch_id: int, position: int, started: str, finished: str | None) -> None:
    _sql(
        "UPDATE batch_items SET started_at = now() + CAST(:s AS interval),"
        " finished_at = now() + CAST(:f AS interval) WHERE batch_id = :id AND position = :p",
        id=batch_id,
        p=position,
        s=started,
        f=finished,
    )


def test_an_item_started_before_an_earlier_one_ended_is_found_and_a_deaths_open_attempts_are_not(
    app: Flask, three_queued: list[int]
) -> None:
    batch = three_queued[0]
    with app.app_context():
        # A death cut two attempts short (grouped outcomes: the one in hand and one not yet written).
        _item_times(batch, 0, "0 s", None)
        _item_times(batch, 1, "1 s", None)
        assert not [line for line in step_violations() if "while an earlier item ran" in line]
        # Ended, the second began before the first had.
        _item_times(batch, 0, "0 s", "5 s")
        _item_times(batch, 1, "1 s", "6 s")
        found = [line for line in step_violations() if "while an earlier item ran" in line]
        assert len(found) == 1 and found[0].startswith(f"batch {batch} item ")
