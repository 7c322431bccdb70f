"""Signing in: every page needs a signed-in user; /login and /logout."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.conftest import PASSWORD

PAGES = ["/", "/batches", "/batches/new", "/batches/1", "/batches/1/log", "/profiles"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_login_when_signed_out(app: Flask, clean: None, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(
    "path", ["/batches", "/batches/1/stop", "/batches/1/cancel", "/batches/1/move-up", "/queue/start", "/profiles"]
)
def test_posts_refused_when_signed_out(app: Flask, clean: None, path: str) -> None:
    response = app.test_client().post(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_htmx_request_when_signed_out_is_told_to_go_to_login(app: Flask, clean: None) -> None:
    response = app.test_client().get("/batches", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_live_stream_needs_sign_in(app: Flask, clean: None) -> None:
    assert app.test_client().get("/live/events").status_code == 401


def test_login_page_has_the_contract_fields(app: Flask, clean: None) -> None:
    html = app.test_client().get("/login").get_data(as_text=True)
    assert 'name="username"' in html and 'name="password"' in html and 'type="submit"' in html


def test_login_with_wrong_password_shows_error(app: Flask, user: str) -> None:
    response = app.test_client().post("/login", data={"username": user, "password": "nope"})
    assert response.status_code == 401
    assert "wrong password" in response.get_data(as_text=True)


def test_login_follows_next_within_the_site_only(app: Flask, user: str) -> None:
    client = app.test_client()
    response = client.post("/login?next=/profiles", data={"username": user, "password": PASSWORD})
    assert response.headers["Location"] == "/profiles"
    client = app.test_client()
    response = client.post("/login?next=https://evil.example/", data={"username": user, "password": PASSWORD})
    assert response.headers["Location"] == "/batches"


def test_login_needs_csrf_token_when_enabled(app: Flask, user: str, csrf: None) -> None:
    response = app.test_client().post("/login", data={"username": user, "password": PASSWORD})
    assert response.status_code == 400


def test_signed_in_user_sees_pages_and_can_sign_out(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/batches").status_code == 200
    assert "alice" in client.get("/profiles").get_data(as_text=True)
    response = client.post("/logout")
    assert response.status_code == 302
    assert client.get("/batches").status_code == 302
