"""Tokens expire and are revoked: refused at once, on any process, since every request reads the database."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import ApiToken
from app.services import accounts
from tests.api.conftest import assert_error
from tests.conftest import ApiClient, make_token


def test_a_revoked_token_is_401_on_its_next_request_and_in_another_process(app: Flask, api: ApiClient) -> None:
    other = ApiClient(app.test_client(), api.headers["Authorization"].removeprefix("Bearer "))
    assert api.get("/queue").status_code == 200 and other.get("/queue").status_code == 200
    result = app.test_cli_runner().invoke(args=["token", "revoke", "tests"])
    assert result.exit_code == 0, result.output
    assert_error(api.get("/queue"), 401)
    assert_error(other.get("/queue"), 401)


def test_an_expired_token_is_401(app: Flask, clean: None) -> None:
    client = ApiClient(app.test_client(), make_token(app, "short"))
    assert client.get("/queue").status_code == 200
    with app.app_context():
        db.session.execute(db.update(ApiToken).values(expires_at=db.func.now() - timedelta(seconds=1)))
        db.session.commit()
    assert_error(client.get("/queue"), 401)


def test_token_create_takes_role_and_expiry_and_list_never_shows_the_secret(app: Flask, clean: None) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(args=["token", "create", "ci", "--role", "viewer", "--expires-in", "90d"])
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    client = ApiClient(app.test_client(), secret)
    assert client.get("/queue").status_code == 200
    assert_error(client.post("/queue/start"), 403)
    listed = runner.invoke(args=["token", "list", "--json"])
    assert secret not in listed.output
    (row,) = json.loads(listed.output)
    assert (row["name"], row["role"], row["state"]) == ("ci", "viewer", "active")
    assert row["expires"] > row["created"] and row["last_used"] is not None
    assert secret not in runner.invoke(args=["token", "list"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "create", "x", "--expires-in", "soon"], "duration"),
        (["token", "create", "x", "--role", "root"], "root"),
        (["token", "revoke", "nobody"], "no token"),
    ],
)
def test_token_commands_refuse_bad_input_and_store_nothing(
    app: Flask, clean: None, args: list[str], message: str
) -> None:
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0 and message in result.output
    with app.app_context():
        assert accounts.list_tokens() == []


def test_a_live_token_name_is_not_reused_until_it_is_revoked(app: Flask, clean: None) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["token", "create", "svc"]).exit_code == 0
    assert runner.invoke(args=["token", "create", "svc"]).exit_code == 1
    assert runner.invoke(args=["token", "revoke", "svc"]).exit_code == 0
    assert runner.invoke(args=["token", "create", "svc"]).exit_code == 0


def test_only_a_hash_of_the_token_is_stored(app: Flask, clean: None) -> None:
    secret = make_token(app, "hashed")
    with app.app_context():
        stored = db.session.scalars(db.select(ApiToken.token_hash)).one()
    assert secret not in stored and len(stored) == 64


def test_a_tokens_last_use_is_written_at_most_once_a_minute(app: Flask, api: ApiClient) -> None:
    def last_used() -> Any:
        with app.app_context():
            value = db.session.scalar(db.select(ApiToken.last_used_at).where(ApiToken.name == "tests"))
            db.session.remove()
        return value

    assert api.get("/queue").status_code == 200
    first = last_used()
    assert first is not None
    assert api.get("/queue").status_code == 200
    assert last_used() == first  # within the minute: not written again
    with app.app_context():
        db.session.execute(db.update(ApiToken).values(last_used_at=first - accounts.LAST_USED_PRECISION))
        db.session.commit()
    assert api.get("/queue").status_code == 200
    assert last_used() > first  # a minute old: written
