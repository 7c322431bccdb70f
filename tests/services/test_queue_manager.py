"""The queue manager's rules under concurrency, on real PostgreSQL (no worker: dispatch is observed)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import Batch
from app.services import dispatch, leases, queue_manager, queue_ranks, queue_repairs
from app.services.queue_manager import NewBatch
from tests.conftest import insert_profiles, queue_violations, run_in_threads


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record run dispatches instead of sending them, so no worker changes the queue under us."""
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(dispatch, "send_run", lambda batch_id, token: calls.append((batch_id, token)))
    return calls


def _enqueue(app: Flask, profile_ids: list[int], name: str = "b") -> Batch:
    with app.app_context():
        batch, _ = queue_manager.enqueue(
            NewBatch(name=name, processor="noop", parameters={}, profile_ids=profile_ids, created_by="test")
        )
        return batch.id


def test_enqueue_50_concurrent_creations_give_one_running_and_positions_1_to_49(
    app_ctx: Flask, sent: list[Any]
) -> None:
    profile_ids = insert_profiles(2)
    ids = run_in_threads(50, lambda i: _enqueue(app_ctx, profile_ids, f"b{i}"))
    rows = db.session.execute(db.select(Batch.status, Batch.queue_position)).all()
    assert sorted(r.status for r in rows).count("in_progress") == 1
    assert sorted(r.queue_position for r in rows if r.status == "queued") == list(range(1, 50))
    assert len(set(ids)) == 50
    assert len(sent) == 1
    assert queue_violations() == []


def test_promote_next_batch_from_10_threads_starts_exactly_one(app_ctx: Flask, sent: list[Any]) -> None:
    profile_ids = insert_profiles(1)
    db.session.execute(db.text("UPDATE queue_state SET paused = true"))
    db.session.commit()
    for i in range(5):
        _enqueue(app_ctx, profile_ids, f"b{i}")
    db.session.execute(db.text("UPDATE queue_state SET paused = false"))
    db.session.commit()

    def promote(_: int) -> int | None:
        with app_ctx.app_context():
            return queue_manager.promote_next_batch()

    results = run_in_threads(10, promote)
    assert [r for r in results if r is not None] == [1]
    assert len(sent) == 1
    assert queue_violations() == []
    running = queue_manager.get_running_batch()
    assert running is not None and running.id == 1 and running.queue_position == 0


@pytest.mark.parametrize("ended", ["done", "failed", "stopped"])
def test_a_start_is_never_stamped_before_the_end_it_follows(app_ctx: Flask, sent: list[Any], ended: str) -> None:
    """The promoter's clock was read before another host's end committed, with a later reading."""
    profile_ids = insert_profiles(1)
    db.session.execute(db.text("UPDATE queue_state SET paused = true"))
    db.session.commit()
    first, second = _enqueue(app_ctx, profile_ids, "first"), _enqueue(app_ctx, profile_ids, "second")
    db.session.execute(db.text("UPDATE queue_state SET paused = false"))
    db.session.commit()
    assert queue_manager.promote_next_batch() == first
    ended_at = db.session.execute(
        db.text(
            "UPDATE batches SET status = :s, finished_at = now() + interval '1 minute'"
            " WHERE id = :id RETURNING finished_at"
        ),
        {"s": ended, "id": first},
    ).scalar_one()
    db.session.commit()

    assert queue_manager.promote_next_batch() == second
    started_at = db.session.get(Batch, second).started_at
    logged = db.session.execute(
        db.text("SELECT at FROM batch_logs WHERE batch_id = :id AND message = 'started'"), {"id": second}
    ).scalar_one()
    assert started_at == logged == ended_at


def test_enqueue_while_paused_waits(app_ctx: Flask, sent: list[Any]) -> None:
    profile_ids = insert_profiles(1)
    db.session.execute(db.text("UPDATE queue_state SET paused = true"))
    db.session.commit()
    batch_id = _enqueue(app_ctx, profile_ids)
    batch = db.session.get(Batch, batch_id)
    assert (batch.status, batch.queue_position) == ("queued", 1)
    assert sent == []


def test_database_refuses_a_second_running_batch(app_ctx: Flask, sent: list[Any]) -> None:
    profile_ids = insert_profiles(1)
    _enqueue(app_ctx, profile_ids)
    second = _enqueue(app_ctx, profile_ids)
    with pytest.raises(Exception, match="batch_one_running"):
        db.session.execute(
            db.text("UPDATE batches SET status = 'in_progress', queue_rank = NULL WHERE id = :id"), {"id": second}
        )
        db.session.commit()
    db.session.rollback()


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE batches SET status = 'done' WHERE id = :queued", "batch_rank_matches_status"),
        ("UPDATE batches SET queue_rank = NULL WHERE id = :queued", "batch_rank_matches_status"),
        ("UPDATE batches SET queue_rank = 7 WHERE id = :running", "batch_rank_matches_status"),
        (
            "UPDATE batches SET queue_rank = (SELECT max(queue_rank) FROM batches) WHERE id = :queued",
            "batch_rank_unique",
        ),
    ],
)
def test_database_refuses_a_rank_that_disagrees_with_the_status_or_repeats(
    app_ctx: Flask, sent: list[Any], statement: str, constraint: str
) -> None:
    profile_ids = insert_profiles(1)
    running = _enqueue(app_ctx, profile_ids)
    queued = _enqueue(app_ctx, profile_ids)
    _enqueue(app_ctx, profile_ids)
    with pytest.raises(Exception, match=constraint):
        db.session.execute(db.text(statement), {"queued": queued, "running": running})
        db.session.commit()
    db.session.rollback()
    assert queue_violations() == []


def _queued_ids() -> list[int]:
    ids = db.session.scalars(db.text("SELECT id FROM batches WHERE status = 'queued' ORDER BY queue_rank")).all()
    db.session.rollback()
    return list(ids)


def _ranks() -> dict[int, int]:
    ranks = dict(db.session.execute(db.text("SELECT id, queue_rank FROM batches WHERE status = 'queued'")).all())
    db.session.rollback()
    return ranks


def _paused_queue(app: Flask, count: int) -> list[int]:
    db.session.execute(db.text("UPDATE queue_state SET paused = true"))
    db.session.commit()
    profile_ids = insert_profiles(1)
    return [_enqueue(app, profile_ids, f"b{i}") for i in range(count)]


def test_moves_into_one_spot_spread_out_only_the_batches_behind_it(app_ctx: Flask, sent: list[Any]) -> None:
    order = _paused_queue(app_ctx, 12)
    ahead = {batch_id: rank for batch_id, rank in _ranks().items() if batch_id in order[:2]}
    # Each move halves the room between #2 and #3: far more moves than the gap allows halvings.
    for _ in range(80):
        moved = queue_manager.move(order[-1], 3, "test")
        order.insert(2, order.pop())
        assert moved.queue_position == 3
        assert _queued_ids() == order
    assert queue_violations() == []
    assert {batch_id: _ranks()[batch_id] for batch_id in ahead} == ahead  # no renumbering of the whole queue


def test_a_dense_run_of_ranks_falls_back_to_renumbering_the_queue(app_ctx: Flask, sent: list[Any]) -> None:
    order = _paused_queue(app_ctx, 200)
    db.session.execute(
        db.text(
            "UPDATE batches b SET queue_rank = o.place FROM (SELECT id, row_number() OVER (ORDER BY queue_rank)"
            " AS place FROM batches WHERE status = 'queued') o WHERE b.id = o.id"
        )
    )
    db.session.commit()
    assert queue_manager.move(order[-1], 50, "test").queue_position == 50
    order.insert(49, order.pop())
    assert _queued_ids() == order
    assert queue_violations() == []
    assert min(_ranks().values()) > 1  # the whole queue, spread out again
    assert queue_manager.move(order[10], 40, "test").queue_position == 40
    order.insert(39, order.pop(10))
    assert _queued_ids() == order


def test_random_moves_cancels_and_arrivals_with_tiny_rank_gaps_keep_the_order_a_list_would(
    app_ctx: Flask, sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gaps of 4 run out after two halvings: nearly every move has to spread
    # ranks out or renumber, the paths a real queue reaches only rarely.
    monkeypatch.setattr(queue_ranks, "RANK_GAP", 4)
    monkeypatch.setattr(queue_ranks, "RESPACE_WINDOW", 3)
    respaced: list[int | None] = []
    respace = queue_ranks.respace_after

    def counted(batch_id: int, before: int) -> int | None:
        respaced.append(respace(batch_id, before))
        return respaced[-1]

    monkeypatch.setattr(queue_ranks, "respace_after", counted)
    rng = random.Random(7)
    order = _paused_queue(app_ctx, 15)
    profile_ids = insert_profiles(1, prefix="late")
    for step in range(250):
        action = rng.random()
        if action < 0.75 and order:
            batch_id = rng.choice(order)
            position = rng.randint(1, len(order) + 2)
            moved = queue_manager.move(batch_id, position, "test")
            order.remove(batch_id)
            order.insert(min(position, len(order) + 1) - 1, batch_id)
            assert moved.queue_position == order.index(batch_id) + 1, step
        elif action < 0.9 and order:
            batch_id = rng.choice(order)
            queue_manager.cancel(batch_id, "test")
            order.remove(batch_id)
        else:
            order.append(_enqueue(app_ctx, profile_ids, f"late{step}"))
        assert _queued_ids() == order, step
    assert queue_violations() == []
    # Both ways out of a full spot were taken: a local spread, and the whole-queue renumber.
    assert any(rank is not None for rank in respaced) and None in respaced


def test_two_move_ups_at_once_move_the_batch_two_places(app_ctx: Flask, sent: list[Any]) -> None:
    order = _paused_queue(app_ctx, 6)
    mover = order[4]

    def up(_: int) -> int:
        with app_ctx.app_context():
            return queue_manager.move_by(mover, -1, "test").id

    run_in_threads(2, up)
    assert _queued_ids().index(mover) + 1 == 3
    assert queue_violations() == []


def _running_with_items_started(app_ctx: Flask, item_count: int) -> tuple[int, str]:
    """A running batch whose first item is `running`, as a run that just claimed it leaves it."""
    batch_id = _enqueue(app_ctx, insert_profiles(item_count))
    db.session.execute(
        db.text("UPDATE batch_items SET status = 'running', attempts = 1 WHERE batch_id = :id AND position = 0"),
        {"id": batch_id},
    )
    db.session.commit()
    return batch_id, db.session.get(Batch, batch_id).dispatch_token


def _end_as_the_run(batch_id: int, token: str, error: str | None = None) -> str | None:
    with db.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        return queue_manager.finish_run(autocommit, batch_id, token, error)


def _ended(batch_id: int) -> tuple[Any, list[str], list[str]]:
    db.session.rollback()
    batch = db.session.get(Batch, batch_id)
    items = db.session.scalars(
        db.text("SELECT status FROM batch_items WHERE batch_id = :id ORDER BY position"), {"id": batch_id}
    ).all()
    logs = db.session.scalars(
        db.text("SELECT message FROM batch_logs WHERE batch_id = :id ORDER BY id"), {"id": batch_id}
    ).all()
    return batch, list(items), list(logs)


def test_a_run_ending_with_items_left_fails_its_batch_saying_so_and_puts_them_back_to_pending(
    app_ctx: Flask, sent: list[Any]
) -> None:
    batch_id, token = _running_with_items_started(app_ctx, 3)
    assert _end_as_the_run(batch_id, "another run's token") is None  # fenced: nothing changes
    assert _ended(batch_id)[0].status == "in_progress"

    assert _end_as_the_run(batch_id, token) == "failed"
    batch, items, logs = _ended(batch_id)
    assert (batch.status, batch.error, batch.queue_position) == ("failed", "3 of 3 items did not run", None)
    assert batch.finished_at is not None
    assert items == ["pending", "pending", "pending"]
    assert logs[-1] == "finished: failed (3 of 3 items did not run)"
    assert _end_as_the_run(batch_id, token) is None  # it has ended: a second end changes nothing
    assert queue_violations() == []


def test_a_run_ending_with_an_error_fails_its_batch_with_that_error(app_ctx: Flask, sent: list[Any]) -> None:
    batch_id, token = _running_with_items_started(app_ctx, 2)
    assert _end_as_the_run(batch_id, token, error="run crashed: KeyError: 'x'") == "failed"
    batch, items, logs = _ended(batch_id)
    assert (batch.status, batch.error) == ("failed", "run crashed: KeyError: 'x'")
    assert items == ["pending", "pending"]
    assert logs[-1] == "finished: failed (run crashed: KeyError: 'x')"


def _restart_as_the_watcher(batch_id: int, token: str, item_id: int) -> tuple[str | None, bool]:
    """restart_stalled_run on a run's own connection, holding its lease; the new token and whether the lease is held."""
    with db.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        assert leases.try_acquire(autocommit, batch_id)
        lines = [{"level": "info", "message": "p-1: working"}, {"level": "error", "message": "item 1/2 timed out"}]
        new_token = queue_repairs.restart_stalled_run(
            autocommit, batch_id, token, item_id, "timed out after 5 s (the processor ignored the limit)", lines
        )
        return new_token, leases.is_held(batch_id)


def test_a_stalled_run_restart_fails_its_item_and_sends_the_batch_again_under_a_new_token_without_counting_a_loss(
    app_ctx: Flask, sent: list[Any]
) -> None:
    batch_id, token = _running_with_items_started(app_ctx, 2)
    db.session.execute(db.text("UPDATE batches SET run_attempts = 1 WHERE id = :id"), {"id": batch_id})
    db.session.commit()
    item_id = db.session.scalar(
        db.text("SELECT id FROM batch_items WHERE batch_id = :id AND position = 0"), {"id": batch_id}
    )
    sent.clear()

    assert _restart_as_the_watcher(batch_id, "another run's token", item_id) == (None, False)  # fenced
    batch, items, _ = _ended(batch_id)
    assert (batch.dispatch_token, batch.failed_items, batch.run_attempts, items) == (
        token,
        0,
        1,
        ["running", "pending"],
    )
    assert sent == []

    new_token, lease_held = _restart_as_the_watcher(batch_id, token, item_id)
    assert new_token is not None and new_token != token and not lease_held
    batch, items, logs = _ended(batch_id)
    assert (batch.status, batch.dispatch_token, batch.failed_items, batch.run_attempts) == (
        "in_progress",
        new_token,
        1,
        0,  # the next run's claim adds it back: a deliberate restart is not a lost run
    )
    assert items == ["failed", "pending"]
    error = db.session.scalar(db.text("SELECT error FROM batch_items WHERE id = :id"), {"id": item_id})
    assert error == "timed out after 5 s (the processor ignored the limit)"
    assert logs[-2:] == ["p-1: working", "item 1/2 timed out"]
    assert sent == [(batch_id, new_token)]
    assert _restart_as_the_watcher(batch_id, token, item_id) == (None, False)  # the old token is fenced off now
    assert _ended(batch_id)[0].failed_items == 1
    assert queue_violations() == []
