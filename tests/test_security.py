"""Security headers on every response; cookie flags; HTTPS seen directly or through trusted proxies only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from app.security import CONTENT_SECURITY_POLICY
from tests.conftest import PASSWORD


def sign_in(app: Flask, **request: object) -> TestResponse:
    client = app.test_client()
    return client.post("/login", data={"username": "alice", "password": PASSWORD, "remember": "y"}, **request)


def cookies(response: TestResponse) -> dict[str, str]:
    """Each Set-Cookie header by cookie name, lower-cased for flag checks."""
    return {value.split("=", 1)[0]: value.lower() for value in response.headers.getlist("Set-Cookie")}


@pytest.mark.parametrize(
    "path", ["/login", "/batches", "/api/v1/health", "/api/v1/batches", "/static/app.js", "/nowhere", "/metrics"]
)
def test_security_headers_on_every_response(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP: HSTS would mean nothing


def test_security_policy_forbids_inline_code_and_framing() -> None:
    directives = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_security_cookies_are_httponly_and_lax_and_not_secure_over_http(app: Flask, user: str) -> None:
    response = sign_in(app)
    assert response.status_code == 302
    jar = cookies(response)
    assert {"session", "remember_token"} <= jar.keys()
    for value in jar.values():
        assert "httponly" in value and "samesite=lax" in value
        assert "; secure" not in value


def test_security_https_by_configuration_sends_hsts_and_secure_cookies(
    another_app: Callable[..., Flask], user: str
) -> None:
    https = another_app(preferred_url_scheme="https", RATELIMIT_ENABLED=False)
    assert https.test_client().get("/login").headers["Strict-Transport-Security"].startswith("max-age=")
    jar = cookies(sign_in(https))
    assert all("; secure" in value for value in jar.values()) and len(jar) >= 2


def test_security_forwarded_https_counts_only_through_trusted_proxies(
    another_app: Callable[..., Flask], app: Flask, user: str
) -> None:
    forwarded = {"headers": {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}}
    behind = another_app(trusted_proxies=1, RATELIMIT_ENABLED=False)
    response = sign_in(behind, **forwarded)
    assert "Strict-Transport-Security" in response.headers
    assert all("; secure" in value for value in cookies(response).values())
    # The same header sent straight to a service that trusts no proxy is anyone's claim: ignored.
    response = sign_in(app, **forwarded)
    assert "Strict-Transport-Security" not in response.headers
    assert not any("; secure" in value for value in cookies(response).values())
