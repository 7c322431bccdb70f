"""Users: roles on the pages, sign-in answers that say nothing about which part was wrong, sessions that end."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import ApiToken, Role
from app.services import accounts
from tests.conftest import PASSWORD, make_user
from tests.views.conftest import Factory


def _signed_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    assert client.post("/login", data={"username": name, "password": PASSWORD}).status_code == 302
    return client


def test_unknown_user_wrong_password_and_disabled_user_get_the_same_answer(app: Flask, clean: None) -> None:
    make_user(app, "bob", Role.VIEWER)
    make_user(app, "carol", Role.VIEWER)
    assert app.test_cli_runner().invoke(args=["user", "disable", "carol"]).exit_code == 0
    answers = {
        (response.status_code, response.get_data(as_text=True).replace(name, "NAME"))
        for name, password in [("nobody", PASSWORD), ("bob", "wrong"), ("carol", PASSWORD)]
        for response in [app.test_client().post("/login", data={"username": name, "password": password})]
    }
    assert len(answers) == 1 and next(iter(answers))[0] == 401


@pytest.mark.parametrize("command", [["user", "disable", "bob"], ["user", "set-password", "bob", "--password", "new"]])
def test_disable_and_a_new_password_end_the_users_sessions(app: Flask, clean: None, command: list[str]) -> None:
    make_user(app, "bob", Role.VIEWER)
    client = _signed_in(app, "bob")
    assert client.get("/batches").status_code == 200
    assert app.test_cli_runner().invoke(args=command).exit_code == 0
    response = client.get("/batches")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_set_password_prompts_and_the_new_password_signs_in(app: Flask, clean: None) -> None:
    make_user(app, "bob", Role.VIEWER)
    result = app.test_cli_runner().invoke(args=["user", "set-password", "bob"], input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.output
    ok = app.test_client().post("/login", data={"username": "bob", "password": "s3cret"})
    assert ok.status_code == 302
    with app.app_context():
        assert accounts.list_users()[0].password_hash.startswith("scrypt:")


def test_user_create_defaults_to_viewer_and_list_shows_roles(app: Flask, clean: None) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["user", "create", "vic", "--password", "pw"]).exit_code == 0
    assert runner.invoke(args=["user", "create", "ada", "--password", "pw", "--role", "admin"]).exit_code == 0
    listed = runner.invoke(args=["user", "list"]).output
    assert "vic" in listed and "viewer" in listed and "ada" in listed and "admin" in listed
    assert "scrypt" not in listed


def test_a_viewer_sees_no_controls(app: Flask, make: Factory) -> None:
    ids = make.profiles(2)
    make.batch("queued", 1, profile_ids=ids)
    make_user(app, "vic", Role.VIEWER)
    client = _signed_in(app, "vic")
    table = client.get("/batches").get_data(as_text=True)
    for hook in ['id="start-button"', 'data-action="', 'id="policy-form"', 'href="/batches/new"']:
        assert hook not in table, hook
    profiles = client.get("/profiles").get_data(as_text=True)
    assert 'id="profile-form"' not in profiles and 'id="import-form"' not in profiles


def test_an_operator_sees_the_controls_but_not_the_policy_form_or_admin_pages(app: Flask, make: Factory) -> None:
    ids = make.profiles(2)
    make.batch("queued", 1, profile_ids=ids)
    make_user(app, "op", Role.OPERATOR)
    table = _signed_in(app, "op").get("/batches").get_data(as_text=True)
    assert 'data-action="cancel"' in table and 'id="start-button"' in table
    assert 'id="policy-form"' not in table and 'id="policy-text"' in table and "/admin/tokens" not in table


@pytest.fixture
def admin(app: Flask, clean: None) -> FlaskClient:
    """An admin signed in (a plain client: the `client` fixture keeps its context, and with it one g for all)."""
    return _signed_in(app, make_user(app, "alice", Role.ADMIN))


def test_the_admin_tokens_page_creates_a_token_shown_once_and_revokes_it(app: Flask, admin: FlaskClient) -> None:
    client = admin
    page = client.post("/admin/tokens", data={"name": "svc", "role": "viewer", "expires_in": "1d"})
    assert page.status_code == 201
    html = page.get_data(as_text=True)
    secret = html.split('id="new-token-value">')[1].split("<")[0]
    assert client.get("/api/v1/queue", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    webhook_secret = html.split('id="new-webhook-secret-value">')[1].split("<")[0]
    with app.app_context():
        stored = db.session.scalar(db.select(ApiToken.webhook_secret).where(ApiToken.name == "svc"))
        db.session.remove()
    assert webhook_secret.startswith("whsec_") and stored == webhook_secret
    listing = client.get("/admin/tokens").get_data(as_text=True)
    assert secret not in listing and webhook_secret not in listing
    client.post("/admin/tokens/revoke", data={"name": "svc"})
    assert client.get("/api/v1/queue", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_a_bad_token_form_names_the_field_and_stores_nothing(app: Flask, admin: FlaskClient) -> None:
    page = admin.post("/admin/tokens", data={"name": "svc", "role": "root"})
    assert page.status_code == 422 and "role" in page.get_data(as_text=True)
    with app.app_context():
        assert accounts.list_tokens() == []


def test_the_admin_users_page_sets_a_role_and_disables(app: Flask, admin: FlaskClient) -> None:
    client = admin
    make_user(app, "bob", Role.VIEWER)
    bob = _signed_in(app, "bob")
    assert bob.post("/queue/start").status_code == 403
    client.post("/admin/users/role", data={"name": "bob", "role": "operator"})
    assert bob.post("/queue/start").status_code == 302
    done = client.post("/admin/users/disable", data={"name": "bob"}, follow_redirects=True)
    assert "Disabled" in done.get_data(as_text=True), done.get_data(as_text=True)[-3000:]
    after = bob.get("/batches")
    assert after.status_code == 302, (after.status_code, after.get_data(as_text=True)[-2000:])
    assert "/login" in after.headers["Location"]
    refused = client.post("/admin/users/disable", data={"name": "alice"}, follow_redirects=True)
    assert "yourself" in refused.get_data(as_text=True)
    assert client.get("/batches").status_code == 200
