"""X-Request-ID on every answer: the client's own when sane, else a generated one; in the request's log lines."""

from __future__ import annotations

import logging
import re

import pytest
from flask import Flask

from app.logging_setup import ContextFilter
from tests.conftest import PASSWORD, ApiClient

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_a_sane_request_id_is_echoed(api: ApiClient) -> None:
    response = api.get("/queue", headers={"X-Request-ID": "client-chose-this.1"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "client-chose-this.1"


@pytest.mark.parametrize("sent", ["x" * 129, "two words", "semi;colon", "<script>"])
def test_a_bad_request_id_is_replaced_by_a_generated_one(api: ApiClient, sent: str) -> None:
    response = api.get("/queue", headers={"X-Request-ID": sent})
    assert GENERATED.fullmatch(response.headers["X-Request-ID"])


def test_every_answer_carries_one_generated_when_none_was_sent(app: Flask, api: ApiClient) -> None:
    client = app.test_client()
    answers = [
        api.get("/queue"),
        client.get("/api/v1/health"),  # public
        client.get("/api/v1/queue"),  # 401, refused before any view
        api.get("/batches/999999"),  # 404
        client.get("/no/such/page"),  # no route at all
        client.get("/login"),  # a page
    ]
    ids = [answer.headers.get("X-Request-ID", "") for answer in answers]
    assert [answer.status_code for answer in answers][2:4] == [401, 404]
    assert all(GENERATED.fullmatch(value) for value in ids), ids
    assert len(set(ids)) == len(ids)  # one each


def test_the_requests_lines_carry_its_id_and_actor(
    app: Flask, api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.services.queue_manager")
    caplog.handler.addFilter(ContextFilter())
    response = api.post("/queue/drain", headers={"X-Request-ID": "drain-please"})
    assert response.status_code == 200
    (line,) = [r for r in caplog.records if r.getMessage() == "queue: drain requested by token:tests"]
    assert (line.request_id, line.actor) == ("drain-please", "token:tests")  # type: ignore[attr-defined]
    api.post("/queue/start")  # cancel the drain


def test_a_pages_lines_name_the_signed_in_user(app: Flask, user: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.services.queue_manager")
    caplog.handler.addFilter(ContextFilter())
    with app.test_client() as client:
        assert client.post("/login", data={"username": user, "password": PASSWORD}).status_code == 302
        response = client.post("/queue/drain", headers={"X-Request-ID": "from-the-page"})
    assert response.status_code in (200, 302, 303)
    assert response.headers["X-Request-ID"] == "from-the-page"
    (line,) = [r for r in caplog.records if r.getMessage() == f"queue: drain requested by {user}"]
    assert (line.request_id, line.actor) == ("from-the-page", f"user:{user}")  # type: ignore[attr-defined]
