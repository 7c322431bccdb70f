"""A session checked a moment ago passes for a live re-fetch of the table; only for one, and only for a second."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from app.extensions import db
from app.live.recent_sessions import RecentSessions
from app.services import accounts
from tests.conftest import PASSWORD
from tests.views.conftest import Factory

HTMX = {"HX-Request": "true"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_kept_for_its_seconds_and_then_asked_again() -> None:
    clock = Clock()
    recent: RecentSessions[str] = RecentSessions(seconds=1.0, clock=clock)
    asked: list[str] = []

    def check() -> str:
        asked.append("asked")
        return "alice"

    assert recent.get("1:0", check) == "alice"
    clock.now += 0.9
    assert recent.get("1:0", check) == "alice"
    assert len(asked) == 1
    clock.now += 0.2
    assert recent.get("1:0", check) == "alice"
    assert len(asked) == 2


def test_a_refused_session_is_never_kept() -> None:
    recent: RecentSessions[str] = RecentSessions(seconds=1.0, clock=Clock())
    answers = iter([None, "alice"])
    assert recent.get("1:0", lambda: next(answers)) is None
    assert recent.get("1:0", lambda: next(answers)) == "alice"


def test_zero_seconds_asks_every_time() -> None:
    recent: RecentSessions[str] = RecentSessions(seconds=0, clock=Clock())
    asked: list[str] = []
    for _ in range(3):
        recent.get("1:0", lambda: asked.append("asked") or "alice")
    assert len(asked) == 3


def test_a_full_cache_forgets_the_old_first() -> None:
    clock = Clock()
    recent: RecentSessions[str] = RecentSessions(seconds=1.0, max_sessions=2, clock=clock)
    recent.get("old", lambda: "old")
    clock.now += 2
    recent.get("a", lambda: "a")
    recent.get("b", lambda: "b")  # full: "old" is past its second and goes
    assert recent.get("a", lambda: "asked again") == "a"


def test_requests_that_come_while_a_session_is_checked_take_that_check_s_answer() -> None:
    """At each expiry, the re-fetches in flight all wanted the database at once: one check serves them."""
    recent: RecentSessions[str] = RecentSessions(seconds=1.0, clock=Clock())
    started, release = threading.Event(), threading.Event()
    asked: list[str] = []

    def slow_check() -> str:
        asked.append("asked")
        started.set()
        assert release.wait(10)
        return "alice"

    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(recent.get, "1:0", slow_check)
        assert started.wait(10)
        others = [pool.submit(recent.get, "1:0", slow_check) for _ in range(5)]
        release.set()
        answers = [first.result(10)] + [other.result(10) for other in others]
    assert answers == ["alice"] * 6
    assert asked == ["asked"]  # waiting for the check under way, or taking what it kept: never one more


def test_when_the_check_under_way_fails_each_request_checks_for_itself() -> None:
    recent: RecentSessions[str] = RecentSessions(seconds=1.0, clock=Clock())
    started, release = threading.Event(), threading.Event()

    def failing_check() -> str:
        started.set()
        assert release.wait(10)
        raise ConnectionError("the database went away")

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(recent.get, "1:0", failing_check)
        assert started.wait(10)
        second = pool.submit(recent.get, "1:0", lambda: "alice")
        release.set()
        with pytest.raises(ConnectionError):
            first.result(10)
        assert second.result(10) == "alice"


@pytest.fixture
def clock(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setitem(app.extensions, "refetch_sessions", RecentSessions(seconds=1.0, clock=clock))
    return clock


@pytest.fixture
def users_read(app: Flask) -> Iterator[list[str]]:
    """The statements that read the users table, as the app runs them."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "FROM users" in statement:
            seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine, "before_cursor_execute", note)


def test_a_refetch_checks_its_session_once_a_second(
    app: Flask, client: FlaskClient, clock: Clock, users_read: list[str]
) -> None:
    Factory(app).pause()
    assert client.get("/batches", headers=HTMX).status_code == 200
    assert len(users_read) == 1
    assert client.get("/batches", headers=HTMX).status_code == 200
    assert len(users_read) == 1
    clock.now += 1.1
    assert client.get("/batches", headers=HTMX).status_code == 200
    assert len(users_read) == 2


def test_other_requests_check_the_session_every_time(
    app: Flask, client: FlaskClient, clock: Clock, users_read: list[str]
) -> None:
    Factory(app).pause()
    client.get("/batches", headers=HTMX)
    before = len(users_read)
    for _ in range(2):
        assert client.get("/batches").status_code == 200  # the whole page, right after a re-fetch
    assert len(users_read) == before + 2


def test_an_ended_session_reaches_the_refetches_within_the_second(
    app: Flask, client: FlaskClient, user: str, clock: Clock
) -> None:
    Factory(app).pause()
    assert client.get("/batches", headers=HTMX).status_code == 200
    with app.app_context():
        accounts.disable_user(user)
    page = client.get("/batches")
    assert page.status_code == 302 and "/login" in page.headers["Location"]  # a page: at once
    clock.now += 1.1
    refetch = client.get("/batches", headers=HTMX)
    assert refetch.status_code == 401 and "/login" in refetch.headers["HX-Redirect"]


def test_a_password_change_elsewhere_signs_the_refetches_out_too(
    app: Flask, client: FlaskClient, user: str, clock: Clock
) -> None:
    Factory(app).pause()
    assert client.get("/batches", headers=HTMX).status_code == 200
    with app.app_context():
        accounts.set_password(user, PASSWORD + "-new")
    clock.now += 1.1
    assert client.get("/batches", headers=HTMX).status_code == 401
