"""GET /metrics: a valid token from anywhere, no token only from METRICS_ALLOWED_HOSTS, the text format."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from flask import Flask

from app.config import ConfigError, Settings
from app.metrics.view import address_allowed
from app.models import Role
from tests.conftest import make_token

ELSEWHERE = {"REMOTE_ADDR": "10.20.30.40"}


def test_metrics_answers_the_allowed_host_without_a_token(app: Flask, clean: None) -> None:
    response = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "batchq_queue_length" in response.text


def test_metrics_refuses_another_host_without_a_token(app: Flask, clean: None) -> None:
    response = app.test_client().get("/metrics", environ_base=ELSEWHERE)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "batchq_" not in response.text


@pytest.mark.parametrize("role", list(Role))
def test_metrics_answers_any_valid_token_from_anywhere(app: Flask, clean: None, role: Role) -> None:
    token = make_token(app, f"scraper-{role.value}", role)
    response = app.test_client().get("/metrics", environ_base=ELSEWHERE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert "batchq_batches" in response.text


def test_metrics_refuses_a_wrong_token_even_from_the_allowed_host(app: Flask, clean: None) -> None:
    response = app.test_client().get("/metrics", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401


def test_metrics_reads_the_allowed_hosts_from_the_settings(another_app: Callable[..., Flask], clean: None) -> None:
    other = another_app(metrics_allowed_hosts=("10.20.0.0/16",), RATELIMIT_ENABLED=False)
    assert other.test_client().get("/metrics", environ_base=ELSEWHERE).status_code == 200
    assert other.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 401


@pytest.mark.parametrize(
    ("address", "allowed", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1",), True),
        ("127.0.0.2", ("127.0.0.1",), False),
        ("10.1.2.3", ("127.0.0.1", "10.0.0.0/8"), True),
        ("::1", ("::1",), True),
        ("::1", ("127.0.0.1",), False),
        (None, ("127.0.0.1",), False),
        ("not an address", ("127.0.0.1",), False),
    ],
)
def test_an_address_is_allowed_when_listed_or_inside_a_listed_cidr(
    address: str | None, allowed: tuple[str, ...], expected: bool
) -> None:
    assert address_allowed(address, allowed) is expected


def test_metrics_settings_default_to_loopback_and_refuse_bad_values(settings: Settings) -> None:
    base = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, "SECRET_KEY": "x"}
    assert Settings.from_env(base).metrics_allowed_hosts == ("127.0.0.1",)
    assert Settings.from_env(base).worker_metrics_port is None
    parsed = Settings.from_env(
        {**base, "METRICS_ALLOWED_HOSTS": "10.0.0.1, 192.168.0.0/24", "WORKER_METRICS_PORT": "9101"}
    )
    assert parsed.metrics_allowed_hosts == ("10.0.0.1", "192.168.0.0/24")
    assert parsed.worker_metrics_port == 9101
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_HOSTS"):
        Settings.from_env({**base, "METRICS_ALLOWED_HOSTS": "example.com"})
    with pytest.raises(ConfigError, match="WORKER_METRICS_PORT"):
        Settings.from_env({**base, "WORKER_METRICS_PORT": "70000"})


def test_metrics_is_not_rate_limited(another_app: Callable[..., Flask], clean: None) -> None:
    other = another_app(rate_limit_api="2/minute", RATELIMIT_KEY_PREFIX=f"metrics-test-{uuid.uuid4().hex}")
    client = other.test_client()
    assert [client.get("/metrics").status_code for _ in range(5)] == [200] * 5


def test_a_file_a_process_had_only_begun_to_create_spoils_no_scrape(app: Flask, clean: None) -> None:
    """prometheus/client_python#1199: an empty file (its process killed between creating and sizing it)."""
    from app import metrics

    metrics.ITEMS.labels(processor="noop", outcome="done").inc()  # this process's own file has a value
    empty = metrics.METRICS_DIR / "counter_999999999.db"
    empty.touch()
    try:
        response = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    finally:
        empty.unlink()
    assert response.status_code == 200, response.text
    assert 'batchq_items_total{outcome="done",processor="noop"}' in response.text
