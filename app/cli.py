"""`flask token create` and `flask user create`."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.errors import Conflict
from app.services import accounts

token_cli = AppGroup("token", help="Manage API tokens.")
user_cli = AppGroup("user", help="Manage users of the pages.")


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
