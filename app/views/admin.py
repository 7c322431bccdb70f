"""The admin pages: API tokens (list, create, revoke) and users (list, create, disable, enable, role).

Every change is a plain POST form with a CSRF token, validated by a marshmallow schema
and done by the accounts service; a new token is shown on the answering page only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from marshmallow import Schema, ValidationError

from app.access import requires
from app.errors import AppError
from app.models import Role
from app.schemas.accounts import TokenCreateForm, TokenRevokeForm, UserCreateForm, UserForm, UserRoleForm
from app.services import accounts
from app.views.auth import require_role

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(require_role)


def _read(schema: Schema) -> dict[str, Any]:
    """The posted form through its schema; a bad CSRF token or field is an AppError the page reports."""
    if not FlaskForm().validate_on_submit():
        raise AppError("The form expired; please try again.")
    raw = {key: value.strip() for key, value in request.form.items() if key != "csrf_token"}
    try:
        return dict(schema.load({key: raw[key] for key in schema.fields if key in raw}))
    except ValidationError as exc:
        text = "; ".join(f"{key}: {' '.join(map(str, value))}" for key, value in exc.normalized_messages().items())
        raise AppError(f"Not done: {text}.", exc.normalized_messages()) from None


def _change(endpoint: str, run: Callable[[], str]) -> ResponseReturnValue:
    try:
        flash(run(), "success")
    except AppError as exc:
        flash(exc.message, "error")
    return redirect(url_for(endpoint))


def _tokens_page(new_token: accounts.IssuedToken | None = None, status: int = 200) -> ResponseReturnValue:
    tokens = [(token, accounts.token_state(token)) for token in accounts.list_tokens()]
    context = {"tokens": tokens, "roles": list(Role), "new_token": new_token, "form": FlaskForm()}
    return render_template("admin/tokens.html", **context), status


@bp.get("/tokens")
@requires(Role.ADMIN)
def tokens() -> ResponseReturnValue:
    return _tokens_page()


@bp.post("/tokens")
@requires(Role.ADMIN)
def create_token() -> ResponseReturnValue:
    """Create a token and answer with the page that shows it, the one time it is seen (never a redirect)."""
    try:
        data = _read(TokenCreateForm())
        expires_in = accounts.parse_duration(data["expires_in"]) if data["expires_in"] else None
        token = accounts.issue_token(data["name"], Role(data["role"]), expires_in)
    except AppError as exc:
        flash(exc.message, "error")
        return _tokens_page(status=422 if exc.status == 400 else exc.status)
    flash(f"Created token {data['name']!r} ({data['role']}). Copy it now: it is not shown again.", "success")
    return _tokens_page(new_token=token, status=201)


@bp.post("/tokens/revoke")
@requires(Role.ADMIN)
def revoke_token() -> ResponseReturnValue:
    def run() -> str:
        name = _read(TokenRevokeForm())["name"]
        accounts.revoke_token(name)
        return f"Revoked token {name!r}; requests with it are refused from now on."

    return _change("admin.tokens", run)


@bp.get("/users")
@requires(Role.ADMIN)
def users() -> ResponseReturnValue:
    return render_template("admin/users.html", users=accounts.list_users(), roles=list(Role), form=FlaskForm())


@bp.post("/users")
@requires(Role.ADMIN)
def create_user() -> ResponseReturnValue:
    def run() -> str:
        data = _read(UserCreateForm())
        accounts.create_user(data["name"], data["password"], Role(data["role"]))
        return f"Created user {data['name']!r} ({data['role']})."

    return _change("admin.users", run)


def _not_self(name: str) -> str:
    """Refuse a change that would lock the signed-in admin out of this page."""
    if name == current_user.username:
        raise AppError("Not done: you can't disable yourself or change your own role here.")
    return name


@bp.post("/users/disable")
@requires(Role.ADMIN)
def disable_user() -> ResponseReturnValue:
    def run() -> str:
        name = _not_self(_read(UserForm())["name"])
        accounts.disable_user(name)
        return f"Disabled {name!r}; their sessions have ended."

    return _change("admin.users", run)


@bp.post("/users/enable")
@requires(Role.ADMIN)
def enable_user() -> ResponseReturnValue:
    def run() -> str:
        name = _read(UserForm())["name"]
        accounts.enable_user(name)
        return f"Enabled {name!r}; they can sign in again."

    return _change("admin.users", run)


@bp.post("/users/role")
@requires(Role.ADMIN)
def set_role() -> ResponseReturnValue:
    def run() -> str:
        data = _read(UserRoleForm())
        name = _not_self(data["name"])
        accounts.set_role(name, Role(data["role"]))
        return f"{name!r} is now {data['role']}."

    return _change("admin.users", run)
