"""Resume, retry, drain and the failure policy: each rule on real PostgreSQL (no worker: dispatch is observed)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.errors import Conflict
from app.extensions import db
from app.models import Batch
from app.services import dispatch, queue_manager
from app.services.queue_manager import NewBatch
from app.services.queue_tx import FailurePolicy
from tests.conftest import insert_profiles, queue_violations


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record run dispatches instead of sending them, so no worker changes the queue under us."""
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(dispatch, "send_run", lambda batch_id, token: calls.append((batch_id, token)))
    return calls


def _enqueue(profile_ids: list[int], name: str = "b", **extra: Any) -> int:
    batch, _ = queue_manager.enqueue(
        NewBatch(name=name, processor="noop", parameters={}, profile_ids=profile_ids, created_by="test", **extra)
    )
    return batch.id


def _batch(batch_id: int) -> Batch:
    db.session.rollback()
    batch = db.session.get(Batch, batch_id)
    assert batch is not None
    db.session.refresh(batch)
    return batch


def _log(batch_id: int) -> list[str]:
    db.session.rollback()
    return list(
        db.session.scalars(db.text("SELECT message FROM batch_logs WHERE batch_id = :id ORDER BY id"), {"id": batch_id})
    )


def _end(batch_id: int, failed_positions: tuple[int, ...] = (), error: str | None = None) -> str | None:
    """End the running batch as its run would: the items at `failed_positions` failed, the rest succeeded."""
    db.session.execute(
        db.text(
            "UPDATE batch_items SET status = CASE WHEN position = ANY(:failed) THEN 'failed' ELSE 'succeeded' END"
            " WHERE batch_id = :id"
        ),
        {"id": batch_id, "failed": list(failed_positions)},
    )
    db.session.execute(
        db.text("UPDATE batches SET failed_items = :failed, succeeded_items = total_items - :failed WHERE id = :id"),
        {"id": batch_id, "failed": len(failed_positions)},
    )
    db.session.commit()
    token = _batch(batch_id).dispatch_token
    with db.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        status = queue_manager.finish_run(autocommit, batch_id, token or "", error)
    return status.value if status else None


def _stopped(profile_count: int = 3) -> int:
    """A batch stopped before its run began: every item pending, the queue paused."""
    batch_id = _enqueue(insert_profiles(profile_count, prefix=f"s{profile_count}-{_count()}"), "to resume")
    assert queue_manager.stop(batch_id, "tester").status == "stopped"
    return batch_id


_made = [0]


def _count() -> int:
    _made[0] += 1
    return _made[0]


def _positions() -> dict[int, int]:
    db.session.rollback()
    return dict(db.session.execute(db.select(Batch.id, Batch.queue_position).where(Batch.status == "queued")).all())


# --- resume ----------------------------------------------------------------------


def test_resume_queues_a_stopped_batch_at_the_end_as_if_new_and_logs_who(app_ctx: Flask, sent: list[Any]) -> None:
    stopped = _stopped()
    behind = [_enqueue(insert_profiles(1, prefix=f"q{n}"), f"q{n}") for n in range(2)]
    batch = queue_manager.resume(stopped, "ann")
    assert (batch.status, batch.queue_position) == ("queued", 3)
    assert (batch.started_at, batch.finished_at, batch.error, batch.stop_requested_by) == (None, None, None, None)
    assert batch.pending_items == 3
    assert _log(stopped)[-1] == "resumed by ann at #3 with 3 pending items"
    assert _positions() == {behind[0]: 1, behind[1]: 2, stopped: 3}
    assert queue_violations() == []
    assert [batch_id for batch_id, _ in sent] == [stopped]  # its first start only: the queue is paused


@pytest.mark.parametrize(("position", "expected"), [(1, 1), (2, 2), (3, 3), (99, 4)])
def test_resume_at_a_position_keeps_positions_whole_and_gapless(
    app_ctx: Flask, sent: list[Any], position: int, expected: int
) -> None:
    stopped = _stopped()
    queued = [_enqueue(insert_profiles(1, prefix=f"q{n}"), f"q{n}") for n in range(3)]
    queue_manager.resume(stopped, "ann", position)
    order = sorted(_positions().items(), key=lambda pair: pair[1])
    assert [position for _, position in order] == [1, 2, 3, 4]
    others = [batch_id for batch_id, _ in order if batch_id != stopped]
    assert others == queued and _positions()[stopped] == expected
    assert queue_violations() == []


def test_resume_when_nothing_runs_and_the_queue_is_not_paused_starts_the_batch_at_once(
    app_ctx: Flask, sent: list[Any]
) -> None:
    stopped = _stopped()
    queue_manager.start("ann")  # nothing queued: only un-pauses
    batch = queue_manager.resume(stopped, "ann")
    assert (batch.status, batch.queue_position) == ("in_progress", 0)
    assert batch.started_at is not None
    assert [batch_id for batch_id, _ in sent] == [stopped, stopped]


@pytest.mark.parametrize("status", ["queued", "in_progress", "done", "failed", "cancelled"])
def test_resume_of_a_batch_that_is_not_stopped_is_refused_and_changes_nothing(
    app_ctx: Flask, sent: list[Any], status: str
) -> None:
    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    queued = _enqueue(insert_profiles(1, prefix="q"), "queued")
    target = {"in_progress": running, "queued": queued}.get(status, running)
    if status in ("done", "failed"):
        _end(running, (0,) if status == "failed" else ())
    elif status == "cancelled":
        target = queued
        queue_manager.cancel(queued, "ann")
    before = _batch(target)
    state = (before.status, before.queue_position, before.started_at, before.finished_at, len(_log(target)))
    with pytest.raises(Conflict, match="only a stopped batch can be resumed"):
        queue_manager.resume(target, "ann")
    after = _batch(target)
    assert (after.status, after.queue_position, after.started_at, after.finished_at, len(_log(target))) == state


# --- retry -----------------------------------------------------------------------


def test_retry_makes_a_new_batch_of_the_failed_items_in_their_order_linked_to_the_original(
    app_ctx: Flask, sent: list[Any]
) -> None:
    profile_ids = insert_profiles(4)
    original, _ = queue_manager.enqueue(
        NewBatch(
            name="x" * 200,
            processor="sleep",
            parameters={"seconds": 0.5, "fail_profiles": ["p-1", "p-4"]},
            profile_ids=profile_ids,
            item_timeout=42.0,
            created_by="test",
        )
    )
    assert _end(original.id, (0, 3)) == "failed"
    retried = queue_manager.retry(original.id, "bob")
    assert retried.retry_of == original.id
    assert retried.profile_ids == [profile_ids[0], profile_ids[3]]
    assert (retried.processor, retried.parameters, retried.item_timeout) == (
        "sleep",
        {"seconds": 0.5, "fail_profiles": ["p-1", "p-4"]},
        42.0,
    )
    assert retried.name == "x" * 192 + " (retry)" and len(retried.name) == 200
    assert retried.status == "in_progress"  # nothing ran and the queue is not paused: enqueue semantics
    assert _batch(original.id).status == "failed"
    assert _log(original.id)[-1] == f"retried by bob as batch {retried.id} (2 failed items)"
    assert _log(retried.id)[0] == f"created by bob to retry the failed items of batch {original.id} with 2 profiles"


@pytest.mark.parametrize("how", ["failed without failed items", "done", "stopped", "queued"])
def test_retry_without_failed_items_is_refused_and_creates_nothing(app_ctx: Flask, sent: list[Any], how: str) -> None:
    target = _enqueue(insert_profiles(2), "target")
    if how == "failed without failed items":
        with db.engine.connect() as connection:  # the run crashed before any item ended
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            queue_manager.finish_run(autocommit, target, _batch(target).dispatch_token or "", "run crashed")
        assert _batch(target).status == "failed"
    elif how == "done":
        _end(target)
    elif how == "stopped":
        queue_manager.stop(target, "ann")
    else:
        queue_manager.stop(target, "ann")
        target = _enqueue(insert_profiles(1, prefix="q"), "queued")
    count = db.session.scalar(db.text("SELECT count(*) FROM batches"))
    with pytest.raises(Conflict):
        queue_manager.retry(target, "ann")
    assert db.session.scalar(db.text("SELECT count(*) FROM batches")) == count


# --- drain -----------------------------------------------------------------------


def test_drain_with_nothing_running_pauses_at_once_saying_drained(app_ctx: Flask, sent: list[Any]) -> None:
    snapshot = queue_manager.drain("ann")
    assert (snapshot.paused, snapshot.paused_by, snapshot.paused_reason, snapshot.draining) == (
        True,
        "ann",
        "drained",
        False,
    )
    queued = _enqueue(insert_profiles(1), "waits")
    assert _batch(queued).status == "queued"


def test_drain_pauses_when_the_running_batch_ends_and_promotes_nothing(app_ctx: Flask, sent: list[Any]) -> None:
    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    head = _enqueue(insert_profiles(1, prefix="h"), "head")
    snapshot = queue_manager.drain("ann")
    assert (snapshot.paused, snapshot.draining, snapshot.running.id if snapshot.running else None) == (
        False,
        True,
        running,
    )
    assert _log(running)[-1] == "drain requested by ann: the queue pauses when this batch ends"
    assert queue_manager.promote_next_batch() is None  # the slot is still taken: the drain waits
    assert queue_manager.snapshot().draining is True
    assert _end(running) == "done"
    assert queue_manager.promote_next_batch() is None  # the promotion the run's end chains
    snapshot = queue_manager.snapshot()
    assert (snapshot.paused, snapshot.paused_by, snapshot.paused_reason, snapshot.draining) == (
        True,
        "ann",
        "drained",
        False,
    )
    assert _batch(head).status == "queued"
    assert [batch_id for batch_id, _ in sent] == [running]
    queue_manager.start("bob")
    assert _batch(head).status == "in_progress"


def test_start_while_draining_cancels_the_drain_and_otherwise_is_refused_while_a_batch_runs(
    app_ctx: Flask, sent: list[Any]
) -> None:
    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    head = _enqueue(insert_profiles(1, prefix="h"), "head")
    queue_manager.drain("ann")
    snapshot = queue_manager.start("bob")
    assert (snapshot.paused, snapshot.draining) == (False, False)
    assert _log(running)[-1] == "drain cancelled by bob"
    with pytest.raises(Conflict):
        queue_manager.start("bob")
    _end(running)
    assert queue_manager.promote_next_batch() == head


def test_a_stop_while_draining_pauses_as_a_stop_and_ends_the_drain(app_ctx: Flask, sent: list[Any]) -> None:
    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    queue_manager.drain("ann")
    queue_manager.stop(running, "bob")
    snapshot = queue_manager.snapshot()
    assert (snapshot.paused, snapshot.paused_by, snapshot.paused_reason, snapshot.draining) == (
        True,
        "bob",
        "stopped",
        False,
    )


# --- the failure policy ----------------------------------------------------------


def _run_to_end(name: str, failed: bool) -> int:
    """Enqueue a one-item batch, which starts at once, and end it; then the promotion its end chains."""
    batch_id = _enqueue(insert_profiles(1, prefix=name), name)
    assert _batch(batch_id).status == "in_progress"
    _end(batch_id, (0,) if failed else ())
    queue_manager.promote_next_batch()
    return batch_id


def test_pause_after_failures_pauses_after_n_failed_in_a_row_and_a_done_batch_breaks_the_row(
    app_ctx: Flask, sent: list[Any]
) -> None:
    queue_manager.set_failure_policy(FailurePolicy("continue", 2), "ann")
    _run_to_end("f1", failed=True)
    _run_to_end("ok", failed=False)
    _run_to_end("f2", failed=True)
    assert queue_manager.snapshot().paused is False
    _run_to_end("f3", failed=True)
    snapshot = queue_manager.snapshot()
    assert (snapshot.paused, snapshot.paused_reason, snapshot.paused_by) == (
        True,
        "2 failed batches in a row (failure policy)",
        "failure policy",
    )
    waiting = _enqueue(insert_profiles(1, prefix="w"), "waits")
    assert _batch(waiting).status == "queued"
    queue_manager.start("bob")  # counts afresh: the failures that paused it don't pause it again
    assert _batch(waiting).status == "in_progress"
    assert queue_manager.snapshot().paused is False


def test_on_failure_pause_pauses_after_the_first_failure_before_the_head_starts(
    app_ctx: Flask, sent: list[Any]
) -> None:
    queue_manager.set_failure_policy(FailurePolicy("pause", 0), "ann")
    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    head = _enqueue(insert_profiles(1, prefix="h"), "head")
    _end(running, (0,))
    assert queue_manager.promote_next_batch() is None
    assert queue_manager.snapshot().paused_reason == "1 failed batch in a row (failure policy)"
    assert _batch(head).status == "queued"


def test_with_the_default_policy_a_failure_does_not_pause(app_ctx: Flask, sent: list[Any]) -> None:
    assert queue_manager.failure_policy() == FailurePolicy("continue", 0)
    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    head = _enqueue(insert_profiles(1, prefix="h"), "head")
    _end(running, (0,))
    assert queue_manager.promote_next_batch() == head


def test_the_policy_comes_from_the_settings_until_an_operator_changes_it(app_ctx: Flask, sent: list[Any]) -> None:
    app_ctx.config.update(QUEUE_ON_FAILURE="pause", QUEUE_PAUSE_AFTER_FAILURES=4)
    try:
        assert queue_manager.failure_policy() == FailurePolicy("pause", 4)
        assert queue_manager.set_failure_policy(FailurePolicy("continue", 3), "ann") == FailurePolicy("continue", 3)
        assert queue_manager.failure_policy() == FailurePolicy("continue", 3)
    finally:
        app_ctx.config.update(QUEUE_ON_FAILURE="continue", QUEUE_PAUSE_AFTER_FAILURES=0)


def test_a_cancel_never_counts_the_queue_ahead_of_the_batch(app_ctx: Flask, sent: list[Any]) -> None:
    """A queued batch's position counts the ranks ahead of it (10 ms at 100,000 queued): a cancel needs none."""
    from sqlalchemy import event

    running = _enqueue(insert_profiles(1, prefix="r"), "running")
    queued = [_enqueue(insert_profiles(1, prefix=f"q{n}"), f"q{n}") for n in range(3)]
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        queue_manager.cancel(queued[2], "ann")
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert [statement for statement in statements if "queue_rank <=" in statement] == []
    assert _batch(queued[2]).status == "cancelled" and _batch(queued[2]).queue_position is None
    assert [_batch(batch_id).queue_position for batch_id in (running, queued[0], queued[1])] == [0, 1, 2]
    assert queue_violations() == []
