"""`flask token ...` and `flask user ...`: the token lifecycle and the users of the pages."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.cli_support import echo_json, run_service, table, when
from app.models import Role
from app.services import accounts

token_cli = AppGroup("token", help="Manage API tokens.")
user_cli = AppGroup("user", help="Manage users of the pages.")
ROLE = click.Choice([role.value for role in Role])


@token_cli.command("create")
@click.argument("name")
@click.option("--role", type=ROLE, default=Role.OPERATOR.value, show_default=True)
@click.option("--expires-in", help="like 90d, 12h, 30m or 45s; without it the token never expires")
def create_token(name: str, role: str, expires_in: str | None) -> None:
    """Create an API token and its webhook secret; both are printed once, the token as the last line."""
    expiry = run_service(lambda: accounts.parse_duration(expires_in)) if expires_in else None
    issued = run_service(lambda: accounts.issue_token(name, Role(role), expiry))
    click.echo(f"Created token {name!r} ({role}). Store both now; neither is shown again.")
    click.echo(f"webhook secret: {issued.webhook_secret}")
    click.echo(issued.token)


@token_cli.command("rotate-secret")
@click.argument("name")
def rotate_secret(name: str) -> None:
    """Give a token a new webhook signing secret, printed once; the old one signs nothing from now on."""
    secret = run_service(lambda: accounts.rotate_webhook_secret(name))
    click.echo(f"New webhook secret for token {name!r}; store it now, it is not shown again:")
    click.echo(f"webhook secret: {secret}")


@token_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON array instead of a table")
def list_tokens(as_json: bool) -> None:
    """List tokens: name, role, created, last used, expires and state; never the token itself."""
    rows = [
        {
            "name": token.name,
            "role": token.role,
            "created": when(token.created_at),
            "last_used": when(token.last_used_at),
            "expires": when(token.expires_at),
            "state": accounts.token_state(token),
        }
        for token in accounts.list_tokens()
    ]
    if as_json:
        echo_json(rows)
    else:
        table(rows, ["name", "role", "created", "last_used", "expires", "state"])


@token_cli.command("revoke")
@click.argument("name")
def revoke_token(name: str) -> None:
    """Revoke a token: every web process refuses it from its next request."""
    count = run_service(lambda: accounts.revoke_token(name))
    click.echo(f"Revoked token {name!r}" + (f" ({count} tokens had that name)." if count > 1 else "."))


@user_cli.command("create")
@click.argument("name")
@click.option("--role", type=ROLE, default=Role.VIEWER.value, show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(name: str, role: str, password: str) -> None:
    """Create a user who can sign in to the pages."""
    run_service(lambda: accounts.create_user(name, password, Role(role)))
    click.echo(f"Created user {name!r} ({role}).")


@user_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON array instead of a table")
def list_users(as_json: bool) -> None:
    """List users: name, role, created and whether they are disabled; never a password hash."""
    rows = [
        {
            "name": user.username,
            "role": user.role,
            "created": when(user.created_at),
            "state": "disabled" if user.disabled_at is not None else "active",
        }
        for user in accounts.list_users()
    ]
    if as_json:
        echo_json(rows)
    else:
        table(rows, ["name", "role", "created", "state"])


@user_cli.command("disable")
@click.argument("name")
def disable_user(name: str) -> None:
    """Disable a user: they can't sign in, and their sessions end at once."""
    run_service(lambda: accounts.disable_user(name))
    click.echo(f"Disabled user {name!r}; their sessions have ended.")


@user_cli.command("enable")
@click.argument("name")
def enable_user(name: str) -> None:
    """Let a disabled user sign in again."""
    run_service(lambda: accounts.enable_user(name))
    click.echo(f"Enabled user {name!r}.")


@user_cli.command("set-password")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def set_password(name: str, password: str) -> None:
    """Give a user a new password (asked for when not given); their other sessions end."""
    run_service(lambda: accounts.set_password(name, password))
    click.echo(f"New password set for {name!r}; their sessions have ended.")


@user_cli.command("set-role")
@click.argument("name")
@click.argument("role", type=ROLE)
def set_role(name: str, role: str) -> None:
    """Change a user's role."""
    run_service(lambda: accounts.set_role(name, Role(role)))
    click.echo(f"{name!r} is now {role}.")
