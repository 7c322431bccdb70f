"""`flask queue reconcile` (tokens and users: app/account_cli.py)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from app.services import queue_manager

queue_cli = AppGroup("queue", help="Look after the queue.")


@queue_cli.command("reconcile")
def reconcile() -> None:
    """Run one repair round now (every worker and beat runs one every RECONCILE_INTERVAL seconds)."""
    config = current_app.config
    promoted = queue_manager.recover_lost_run(
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
