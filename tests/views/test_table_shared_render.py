"""The table's live re-fetch is rendered once per change and shared between viewers of one role.

It carries no CSRF token (a page's token is its own; app.js adds it to a form as it is submitted),
never shows one role's controls to another, and shows a change as soon as its hint has been published.
"""

from __future__ import annotations

import gzip
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import live
from app.extensions import db
from app.live.shared_render import SharedRenders
from app.models import Role
from app.services import batches as batches_service
from app.services import events
from tests.conftest import PASSWORD, make_user
from tests.views.conftest import Factory

HTMX = {"HX-Request": "true"}


def signed_in(app: Flask, name: str, role: Role) -> FlaskClient:
    make_user(app, name, role)
    client = app.test_client()
    assert client.post("/login", data={"username": name, "password": PASSWORD}).status_code == 302
    return client


def renders_done(app: Flask) -> int:
    renders: SharedRenders = app.extensions["table_renders"]
    return renders.renders_done


def publish(app: Flask, batch_id: int) -> None:
    with app.app_context():
        events.publish("batch", batch_id)


@pytest.fixture
def queued(app: Flask, clean: None) -> Iterator[list[int]]:
    make = Factory(app)
    make.pause()
    yield [make.batch("queued", n, name=f"q{n}") for n in range(1, 3)]


@pytest.fixture
def still(app: Flask, queued: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing outside the test moves a render's key: a hint or a health change from a worker an earlier
    test left behind would rightly be a new render, and make a count of renders off by one."""
    publish(app, queued[0])
    with app.app_context():
        hint_now = live.hub().current_event_id()
        monkeypatch.setattr(live.hub(), "current_event_id", lambda: hint_now)
    monkeypatch.setitem(app.extensions, "health_watch", SimpleNamespace(generation=0, served=lambda health: None))
    renders: SharedRenders = app.extensions["table_renders"]
    assert renders.max_age > 0, "the app shares renders as configured"
    monkeypatch.setattr(renders, "max_age", 60.0)  # nor does a slow machine


def test_the_live_region_has_no_token_and_the_page_has_one(client: FlaskClient, queued: list[int], csrf: None) -> None:
    page = client.get("/batches").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert token is not None
    assert 'name="csrf_token"' in page.split('id="table-region"')[1]  # without JavaScript the forms carry it
    region = client.get("/batches", headers=HTMX).get_data(as_text=True)
    assert 'data-action="cancel"' in region
    assert "csrf_token" not in region
    # The page's token is what app.js adds to a form of the shared region.
    response = client.post(f"/batches/{queued[1]}/cancel", data={"csrf_token": token.group(1)})
    assert response.status_code == 302
    assert f'data-batch-id="{queued[1]}" data-status="cancelled"' in client.get("/batches").get_data(as_text=True)
    refused = client.post(f"/batches/{queued[0]}/cancel", data={}, follow_redirects=True)
    assert "The form expired" in refused.get_data(as_text=True)


def test_viewers_of_one_role_share_one_render_per_change(app: Flask, still: None) -> None:
    first, second = signed_in(app, "olga", Role.OPERATOR), signed_in(app, "oscar", Role.OPERATOR)
    before = renders_done(app)
    body = first.get("/batches", headers=HTMX).get_data(as_text=True)
    assert second.get("/batches", headers=HTMX).get_data(as_text=True) == body
    assert renders_done(app) == before + 1
    # Another query of the table is another render.
    second.get("/batches?status=queued", headers=HTMX)
    assert renders_done(app) == before + 2


def test_a_role_never_sees_another_roles_render(app: Flask, queued: list[int]) -> None:
    operator, viewer = signed_in(app, "olga", Role.OPERATOR), signed_in(app, "vera", Role.VIEWER)
    publish(app, queued[0])
    assert 'data-action="cancel"' in operator.get("/batches", headers=HTMX).get_data(as_text=True)
    assert 'data-action="cancel"' not in viewer.get("/batches", headers=HTMX).get_data(as_text=True)


def test_a_change_shows_in_the_first_fetch_after_its_hint(app: Flask, queued: list[int]) -> None:
    operator = signed_in(app, "olga", Role.OPERATOR)
    publish(app, queued[0])
    assert 'data-batch-id="99"' not in operator.get("/batches", headers=HTMX).get_data(as_text=True)
    Factory(app).batch("queued", 3, id=99, name="late")
    publish(app, 99)
    assert 'data-batch-id="99"' in operator.get("/batches", headers=HTMX).get_data(as_text=True)


def test_a_refetch_that_says_which_hint_it_was_told_of_is_served_without_asking_redis(
    app: Flask, still: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open page re-fetches at each change: the hint's id comes with it, not from a Redis round trip each."""
    viewer = signed_in(app, "tess", Role.VIEWER)
    # Renders of its own: the one it leaves behind is newer than the hint the next test's fixture holds to.
    monkeypatch.setitem(app.extensions, "table_renders", SharedRenders(max_age=60))
    hub = app.extensions["live_hub"]
    counter = [hub.current_event_id()]
    viewer.get("/batches", headers=HTMX)  # the render as of the counter now
    asked: list[str] = []
    monkeypatch.setattr(hub, "current_event_id", lambda: asked.append("asked") or counter[0])
    monkeypatch.setattr(hub, "latest_id", counter[0])  # this process relayed that hint to its streams
    before = renders_done(app)

    def refetch(told: str, **more: str) -> None:
        asked.clear()
        assert viewer.get("/batches", headers={**HTMX, "X-Live-Event-Id": told, **more}).status_code == 200

    refetch(str(counter[0]))
    assert (renders_done(app), asked) == (before, [])  # the shared render, and Redis never asked
    # Told of a hint this process has not relayed yet (another's stream was quicker, or a made-up number):
    # held to the counter, so no render newer than any can be waited for in vain.
    for ahead in (str(counter[0] + 1), "9" * 18):
        refetch(ahead)
        assert (renders_done(app), asked) == (before, ["asked"]), ahead
    # A newer hint, relayed here: believed, and a new render (which reads the counter itself, once).
    counter[0] += 1
    monkeypatch.setattr(hub, "latest_id", counter[0])
    refetch(str(counter[0]))
    assert (renders_done(app), asked) == (before + 1, ["asked"])
    # Not a number, too long to be one, or not a live re-fetch: the counter is read as before.
    for headers in (
        {**HTMX, "X-Live-Event-Id": "12x"},
        {**HTMX, "X-Live-Event-Id": "9" * 40},
        {"X-Live-Event-Id": "1"},
    ):
        asked.clear()
        assert viewer.get("/batches", headers=headers).status_code == 200
        assert asked == ["asked"], headers


def test_a_health_change_is_a_new_render_though_no_queue_hint_came(app: Flask, still: None) -> None:
    """The waiting reasons turn on the workers' health, which moves no queue hint: the watcher's generation does."""
    viewer = signed_in(app, "hana", Role.VIEWER)
    before = renders_done(app)
    body = viewer.get("/batches", headers=HTMX).get_data(as_text=True)
    assert viewer.get("/batches", headers=HTMX).get_data(as_text=True) == body
    assert renders_done(app) == before + 1
    app.extensions["health_watch"].generation += 1  # as the watcher does when health changes
    viewer.get("/batches", headers=HTMX)
    assert renders_done(app) == before + 2


def test_a_viewer_waiting_for_anothers_render_holds_no_pooled_connection(
    app: Flask, queued: list[int], another_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The render reads through a connection of its own: waiters that kept theirs emptied the pool under it,
    and with 200 viewers every request waited out the pool's timeout and failed."""
    web = another_app(LIVE_REFETCH_SESSION_SECONDS=0)  # every re-fetch checks its session: takes a connection
    make_user(app, "vic", Role.VIEWER)
    clients = [web.test_client() for _ in range(2)]
    for client in clients:
        assert client.post("/login", data={"username": "vic", "password": PASSWORD}).status_code == 302
    rendering, release, second_waits = threading.Event(), threading.Event(), threading.Event()
    real_list = batches_service.list_batches

    def slow_list(*args: Any, **kwargs: Any) -> Any:
        rendering.set()
        assert release.wait(10)
        return real_list(*args, **kwargs)

    renders: SharedRenders = web.extensions["table_renders"]
    real_get = renders.get
    calls = itertools.count()

    def noted_get(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == 1:
            second_waits.set()
        return real_get(*args, **kwargs)

    monkeypatch.setattr(batches_service, "list_batches", slow_list)
    monkeypatch.setattr(renders, "get", noted_get)
    answers: list[int] = []
    fetch = [
        threading.Thread(target=lambda c=c: answers.append(c.get("/batches", headers=HTMX).status_code))
        for c in clients
    ]
    fetch[0].start()
    assert rendering.wait(10)
    fetch[1].start()
    assert second_waits.wait(10)
    with web.app_context():
        held = db.engine.pool.checkedout()  # type: ignore[attr-defined]
    release.set()
    for thread in fetch:
        thread.join(30)
    assert held == 1, "only the render holds a connection"
    assert answers == [200, 200]


def test_the_region_is_sent_compressed_to_whoever_accepts_it_and_compressed_once(app: Flask, still: None) -> None:
    client = signed_in(app, "carol", Role.VIEWER)
    plain = client.get("/batches", headers=HTMX)
    assert "Content-Encoding" not in plain.headers
    assert "Accept-Encoding" in plain.headers["Vary"]
    renders = renders_done(app)
    packed = [client.get("/batches", headers={**HTMX, "Accept-Encoding": "gzip, deflate, br"}) for _ in range(2)]
    assert [answer.headers["Content-Encoding"] for answer in packed] == ["gzip", "gzip"]
    assert gzip.decompress(packed[0].get_data()).decode() == plain.get_data(as_text=True)
    assert len(packed[0].get_data()) * 3 < len(plain.get_data())
    assert renders_done(app) == renders  # the render the plain answer made, compressed for the others
    stored: SharedRenders = app.extensions["table_renders"]
    (render,) = [kept for kept in stored._latest.values() if kept.body == plain.get_data(as_text=True)]
    assert render._gzipped == packed[1].get_data()  # kept with the render for the next viewer
