"""`flask token create`, `flask user create` and `flask queue reconcile`."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from app.errors import Conflict
from app.services import accounts, queue_manager

token_cli = AppGroup("token", help="Manage API tokens.")
user_cli = AppGroup("user", help="Manage users of the pages.")
queue_cli = AppGroup("queue", help="Look after the queue.")


@token_cli.command("create")
@click.argument("name")
def create_token(name: str) -> None:
    """Create an API token; it is printed once, as the last line."""
    token = accounts.create_token(name)
    click.echo(f"Created token {name!r}. Store it now; it is not shown again:")
    click.echo(token)


@user_cli.command("create")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(name: str, password: str) -> None:
    """Create a user who can sign in to the pages."""
    try:
        accounts.create_user(name, password)
    except Conflict as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"Created user {name!r}.")


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
