"""Rate limits on real Redis, shared by two apps as by two web processes: the API per token, sign-in per address
and per account; 429 with Retry-After, in the contract's shape for the API and as a page for /login."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.extensions import db
from app.services import accounts
from tests.conftest import PASSWORD

LIMIT = 3


@pytest.fixture
def two_processes(another_app: Callable[..., Flask]) -> tuple[FlaskClient, FlaskClient]:
    """Two apps on the same Redis limits (a prefix of this test's own), each as another web process would be."""
    prefix = f"batchq-test-limits-{uuid.uuid4().hex[:8]}"
    apps = [
        another_app(rate_limit_api=f"{LIMIT}/minute", rate_limit_login=f"{LIMIT}/minute", RATELIMIT_KEY_PREFIX=prefix)
        for _ in range(2)
    ]
    return apps[0].test_client(), apps[1].test_client()


def new_token(app: Flask, name: str) -> str:
    with app.app_context():
        value = accounts.create_token(name)
        db.session.remove()
    return value


def get(client: FlaskClient, path: str, token: str | None = None) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers)


def assert_too_many(response: TestResponse) -> None:
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_rate_limit_api_per_token_shared_by_every_process(
    two_processes: tuple[FlaskClient, FlaskClient], app: Flask, clean: None
) -> None:
    first, second = two_processes
    token, other = new_token(app, "busy"), new_token(app, "quiet")
    statuses = [get((first, second)[i % 2], "/api/v1/batches", token).status_code for i in range(LIMIT)]
    assert statuses == [200] * LIMIT
    response = get(first, "/api/v1/batches", token)
    assert_too_many(response)
    error = response.get_json()["error"]
    assert error["code"] == "too_many_requests" and "retry" in error["message"]
    assert_too_many(get(second, "/api/v1/queue", token))  # one allowance for the whole API
    assert get(second, "/api/v1/batches", other).status_code == 200  # another token has its own


def test_rate_limit_api_without_a_token_counts_per_address(
    two_processes: tuple[FlaskClient, FlaskClient], clean: None
) -> None:
    first, second = two_processes
    assert [get(first, "/api/v1/batches").status_code for _ in range(LIMIT)] == [401] * LIMIT
    assert_too_many(get(second, "/api/v1/batches"))


def test_rate_limit_spares_health_and_the_api_description(
    two_processes: tuple[FlaskClient, FlaskClient], clean: None
) -> None:
    first, _ = two_processes
    assert {get(first, "/api/v1/openapi.json").status_code for _ in range(LIMIT * 3)} == {200}
    assert 429 not in {get(first, "/api/v1/health").status_code for _ in range(LIMIT * 3)}


def sign_in(client: FlaskClient, username: str, password: str, address: str = "198.51.100.1") -> TestResponse:
    return client.post(
        "/login", data={"username": username, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


def test_rate_limit_login_failures_per_address_then_a_readable_page(
    two_processes: tuple[FlaskClient, FlaskClient], user: str
) -> None:
    first, second = two_processes
    names = [f"nobody-{i}" for i in range(LIMIT)]  # other accounts each time: the address's allowance runs out
    assert [sign_in((first, second)[i % 2], name, "wrong").status_code for i, name in enumerate(names)] == [401] * 3
    response = sign_in(second, "alice", PASSWORD)  # even the right password waits
    assert_too_many(response)
    page = response.get_data(as_text=True)
    assert "Too many attempts" in page and "Try again in" in page
    assert sign_in(first, "alice", PASSWORD, address="198.51.100.2").status_code == 302  # another address


def test_rate_limit_login_failures_per_account_from_any_address(
    two_processes: tuple[FlaskClient, FlaskClient], user: str
) -> None:
    first, second = two_processes
    for i in range(LIMIT):
        assert sign_in((first, second)[i % 2], "Alice", "wrong", address=f"198.51.100.{10 + i}").status_code == 401
    assert_too_many(sign_in(first, "alice", PASSWORD, address="198.51.100.99"))


def test_rate_limit_login_successes_do_not_count(two_processes: tuple[FlaskClient, FlaskClient], user: str) -> None:
    first, second = two_processes
    for i in range(LIMIT * 2):
        assert sign_in((first, second)[i % 2], "alice", PASSWORD).status_code == 302
    assert first.get("/login").status_code in (200, 302)  # the form itself is never limited
