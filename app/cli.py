"""`flask queue ...`: the queue from a shell, under the API's rules (batches: app/batch_cli.py; tokens and users:
app/account_cli.py).

Each command calls what the matching endpoint calls (app/api/queue.py, app/api/batches.py) and prints the
endpoint's JSON with `--json`; the queue manager alone changes a status.
"""

from __future__ import annotations

from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from app.api.queue import queue_body
from app.cli_support import actor, echo_json, json_option, pairs, run_service, table
from app.errors import Conflict
from app.models import Batch
from app.schemas.batches import BatchOut, MoveBody
from app.services import batches, queue_manager, queue_repairs
from app.services.queue_manager import QueueSnapshot
from app.services.snapshots import read_snapshot

queue_cli = AppGroup("queue", help="Look after the queue.")


def batch_json(batch: Batch) -> dict[str, Any]:
    """The batch as the API answers it."""
    dumped: dict[str, Any] = BatchOut().dump(batch)
    return dumped


def batch_line(batch: Batch) -> str:
    """One batch in a sentence: `batch 7 'nightly' (in_progress, 3/10 items)`."""
    done = batch.succeeded_items + batch.failed_items
    return f"batch {batch.id} {batch.name!r} ({batch.status}, {done}/{batch.total_items} items)"


def _show_queue(snapshot: QueueSnapshot, as_json: bool, first: int = 0) -> None:
    if as_json:
        echo_json(queue_body(snapshot))
        return
    paused = "no"
    if snapshot.paused:
        by = f" by {snapshot.paused_by}" if snapshot.paused_by else ""
        at = f" at {snapshot.paused_at:%Y-%m-%d %H:%M:%S} UTC" if snapshot.paused_at else ""
        reason = f" ({snapshot.paused_reason})" if snapshot.paused_reason else ""
        paused = f"yes{reason}{by}{at}"
    pairs(
        [
            ("paused", paused),
            ("draining", f"yes (asked by {snapshot.drain_by})" if snapshot.draining else "no"),
            ("running", batch_line(snapshot.running) if snapshot.running else "nothing"),
            ("queued", snapshot.queued_count),
            ("start_enabled", "yes" if snapshot.start_enabled else "no"),
        ]
    )
    if first <= 0 or not snapshot.queued_count:
        return
    queued = batches.list_batches(1, first, batches.BatchFilter(statuses=("queued",))).items
    click.echo("")
    table(
        [
            {
                "#": f"#{batch.queue_position}",
                "id": batch.id,
                "name": batch.name,
                "processor": batch.processor,
                "profiles": batch.total_items,
                "created_by": batch.created_by,
            }
            for batch in queued
        ],
        ["#", "id", "name", "processor", "profiles", "created_by"],
    )
    if snapshot.queued_count > len(queued):
        click.echo(f"... and {snapshot.queued_count - len(queued)} more (--first N shows more)")


@queue_cli.command("status")
@click.option("--first", default=10, show_default=True, type=click.IntRange(min=0), help="queued batches listed")
@json_option
def status(first: int, as_json: bool) -> None:
    """The queue: paused, draining, what runs, how many wait (GET /queue), and the first queued batches."""
    read_snapshot()  # the summary and the list from one moment, as GET /queue and the table
    _show_queue(queue_manager.snapshot(), as_json, first)


@queue_cli.command("start")
@json_option
def start(as_json: bool) -> None:
    """Un-pause the queue and start its head (POST /queue/start); while a batch runs, only cancel a drain."""
    snapshot = run_service(lambda: queue_manager.start(actor()), as_json)
    if not as_json:
        click.echo("Queue started." if snapshot.running is None else "Drain cancelled.")
    _show_queue(snapshot, as_json)


@queue_cli.command("drain")
@json_option
def drain(as_json: bool) -> None:
    """Pause the queue once the running batch ends, at once if none runs (POST /queue/drain)."""
    snapshot = run_service(lambda: queue_manager.drain(actor()), as_json)
    if not as_json:
        click.echo("Queue paused." if snapshot.running is None else "The queue pauses when the running batch ends.")
    _show_queue(snapshot, as_json)


@queue_cli.command("stop")
@json_option
def stop(as_json: bool) -> None:
    """Stop the running batch and pause the queue until Start (POST /batches/<running id>/stop)."""

    def stop_running() -> Batch:
        running = queue_manager.get_running_batch()
        if running is None:
            raise Conflict("nothing runs; there is no batch to stop")
        return queue_manager.stop(running.id, actor())

    batch = run_service(stop_running, as_json)
    if as_json:
        echo_json(batch_json(batch))
    else:
        click.echo(f"Stopping {batch_line(batch)}; the queue is paused until `queue start`.")


@queue_cli.command("move")
@click.argument("batch_id", metavar="ID", type=int)
@click.argument("position", type=int)
@json_option
def move(batch_id: int, position: int, as_json: bool) -> None:
    """Put a queued batch at POSITION (1 is next; past the end means last) (POST /batches/<id>/move)."""

    def move_it() -> Batch:
        data = MoveBody().load({"position": position})
        return queue_manager.move(batch_id, data["position"], actor())

    batch = run_service(move_it, as_json)
    if as_json:
        echo_json(batch_json(batch))
    else:
        click.echo(f"Batch {batch.id} is at #{batch.queue_position}.")


@queue_cli.command("cancel")
@click.argument("batch_id", metavar="ID", type=int)
@json_option
def cancel(batch_id: int, as_json: bool) -> None:
    """Cancel a queued batch; the batches behind it move up (POST /batches/<id>/cancel)."""
    batch = run_service(lambda: queue_manager.cancel(batch_id, actor()), as_json)
    if as_json:
        echo_json(batch_json(batch))
    else:
        click.echo(f"Cancelled {batch_line(batch)}.")


@queue_cli.command("reconcile")
def reconcile() -> None:
    """Run one repair round now (every worker and beat runs one every RECONCILE_INTERVAL seconds)."""
    config = current_app.config
    promoted = queue_repairs.recover_lost_run(
        heartbeat_timeout=config["BATCH_HEARTBEAT_TIMEOUT"],
        stop_grace=config["STOP_GRACE_SECONDS"],
        max_attempts=config["BATCH_MAX_RUN_ATTEMPTS"],
    )
    running = queue_manager.get_running_batch()
    if promoted is not None:
        click.echo(f"Promoted batch {promoted}.")
    elif running is not None:
        click.echo(f"Batch {running.id} is {running.status}; see its log for any repair.")
    else:
        paused = " (the queue is paused: Start resumes it)" if queue_manager.snapshot().paused else ""
        click.echo(f"Nothing runs{paused}.")
