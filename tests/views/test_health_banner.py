"""The health banner and the waiting reasons, as the server renders them.

The banner (`#health-banner`, on every signed-in page) names what keeps batches
from moving; each queued row says why it waits and, with history to go by, when
it should start. Liveness comes from recorded heartbeats: `without_workers`
removes them all, `live_worker` keeps one fresh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bs4 import BeautifulSoup, Tag
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.services.health import NO_WORKER
from tests.conftest import ApiClient
from tests.views.conftest import Factory

LATE_WITHOUT_BEAT = "Repairs are running late (beat missing)"
LATE_WITH_BEAT = "Repairs are running late"
PAGES = ["/batches", "/batches/{id}", "/batches/new", "/profiles"]


def soup_of(client: FlaskClient, path: str) -> BeautifulSoup:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def banner(soup: BeautifulSoup) -> Tag:
    element = soup.select_one("#health-banner")
    assert element is not None, "the page has no #health-banner"
    return element


def problems(element: Tag) -> list[str]:
    """The banner's sentences: the text of each element directly inside it."""
    return [child.get_text(" ", strip=True) for child in element.find_all(True, recursive=False)]


def repaired(app: Flask, seconds_ago: float) -> None:
    """Say that the last repair round ran `seconds_ago` seconds ago (as a worker's or beat's timer would)."""
    with app.app_context():
        db.session.execute(
            db.text("UPDATE queue_state SET repaired_at = now() - make_interval(secs => :ago)"), {"ago": seconds_ago}
        )
        db.session.commit()
        db.session.remove()


def waiting(soup: BeautifulSoup, batch_id: int) -> Tag | None:
    return soup.select_one(f'#batch-table tr[data-batch-id="{batch_id}"] .waiting-reason')


def reason(soup: BeautifulSoup, batch_id: int) -> tuple[str, str]:
    """(code, sentence) of a row's waiting reason."""
    element = waiting(soup, batch_id)
    assert element is not None, f"row {batch_id} has no .waiting-reason"
    return str(element.get("data-code")), element.get_text(" ", strip=True)


@pytest.fixture
def live_beat(app: Flask, live_worker: Any) -> Iterator[Any]:
    """A beat's heartbeat beside the worker's, kept fresh until the test ends."""
    from app.services.liveness import ProcessRecord
    from workers.liveness import ProcessLife

    record = ProcessRecord(name="beat@stand-in:1", kind="beat", host="stand-in", pid=os.getpid())
    life = ProcessLife(app, record, repair_every=None).start()
    try:
        yield life
    finally:
        life.stop()


# --- the banner ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_banner_says_no_worker_on_every_page(
    client: FlaskClient, app: Flask, make: Factory, without_workers: None, path: str
) -> None:
    """Every page, not just the table, tells people that nothing will run."""
    batch_id = make.batch("queued", 1)
    repaired(app, seconds_ago=0)
    element = banner(soup_of(client, path.format(id=batch_id)))
    assert "No worker is running" in element.get_text()
    assert problems(element) == [NO_WORKER]


@pytest.mark.parametrize("path", PAGES)
def test_banner_is_empty_with_a_live_worker_and_recent_repairs(
    client: FlaskClient, app: Flask, make: Factory, live_worker: Any, path: str
) -> None:
    """All is well: the element stays (the live refresh needs it) but says nothing."""
    batch_id = make.batch("queued", 1)
    repaired(app, seconds_ago=0)
    element = banner(soup_of(client, path.format(id=batch_id)))
    assert element.get_text(strip=True) == ""
    assert problems(element) == []


def test_banner_says_repairs_late_without_a_beat_and_forgets_it_once_repairs_run(
    client: FlaskClient, app: Flask, live_worker: Any
) -> None:
    """A worker alone does not clear the repairs note: only a recent repair round does."""
    repaired(app, seconds_ago=3600)
    assert problems(banner(soup_of(client, "/batches"))) == [LATE_WITHOUT_BEAT]
    repaired(app, seconds_ago=0)
    assert problems(banner(soup_of(client, "/batches"))) == []


def test_banner_says_repairs_late_without_blaming_a_beat_that_is_alive(
    client: FlaskClient, app: Flask, live_beat: Any
) -> None:
    """With a beat alive the note does not send people looking for a missing beat."""
    repaired(app, seconds_ago=3600)
    assert problems(banner(soup_of(client, "/batches"))) == [LATE_WITH_BEAT]


def test_banner_lists_each_cause_once(client: FlaskClient, app: Flask, without_workers: None) -> None:
    """No worker and late repairs are two causes: two sentences, in a stable order."""
    repaired(app, seconds_ago=3600)
    assert problems(banner(soup_of(client, "/batches"))) == [NO_WORKER, LATE_WITHOUT_BEAT]


def test_health_banner_fragment_is_just_the_sentences(client: FlaskClient, app: Flask, live_worker: Any) -> None:
    """The live refresh swaps the fragment into #health-banner: no page around it, no second banner."""
    repaired(app, seconds_ago=0)
    response = client.get("/health-banner")
    assert response.status_code == 200
    assert response.get_data(as_text=True).strip() == ""

    live_worker.stop()
    response = client.get("/health-banner")
    assert response.status_code == 200
    fragment = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert fragment.select("html, head, body, main, nav, #health-banner, #batch-table") == []
    assert problems(fragment) == [NO_WORKER]


def test_the_banners_five_seconds_add_up(app: Flask) -> None:
    """The promise of a banner within 5 s of its cause, as the periods add up (timed in Chromium on a
    loaded machine, tests/browser/test_health_banner.py can only allow more): a killed worker's record
    counts as gone three heartbeats after its last one, which came before the kill; the web process's
    health watch looks every LIVE_HEALTH_SECONDS; the rest is the page's re-fetch."""
    from app.services import liveness

    aged_out = liveness.MISSED_BEATS * liveness.HEARTBEAT_SECONDS
    assert aged_out + float(app.config["LIVE_HEALTH_SECONDS"]) <= 4


def test_health_banner_fragment_needs_sign_in(app: Flask) -> None:
    """Like every page but the sign-in form, the fragment is for signed-in users only."""
    response = app.test_client().get("/health-banner")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


# --- the waiting reasons -------------------------------------------------------------------


def test_waiting_reason_without_a_worker_on_every_queued_row_and_its_page(
    client: FlaskClient, make: Factory, without_workers: None
) -> None:
    """No worker holds back the whole queue; finished batches wait for nothing."""
    first, second = make.batch("queued", 1), make.batch("queued", 2)
    done = make.batch("done")
    soup = soup_of(client, "/batches")
    assert reason(soup, first) == ("no_worker", "no worker is running")
    assert reason(soup, second) == ("no_worker", "no worker is running")
    assert waiting(soup, done) is None

    detail = soup_of(client, f"/batches/{second}").select_one(".waiting-reason")
    assert detail is not None and detail.get_text(strip=True) == "no worker is running"


def test_waiting_reason_when_paused_names_who_paused(client: FlaskClient, make: Factory, live_worker: Any) -> None:
    """A paused queue waits for a person: the row says who."""
    queued = make.batch("queued", 1)
    make.pause(by="bob")
    code, sentence = reason(soup_of(client, "/batches"), queued)
    assert code == "paused"
    assert sentence.startswith("queue paused by bob")


def test_waiting_reason_behind_the_running_batch(client: FlaskClient, make: Factory, live_worker: Any) -> None:
    """Queued batches behind a running one name it and their place in line."""
    running = make.batch("in_progress", 0)
    first, second = make.batch("queued", 1), make.batch("queued", 2)
    soup = soup_of(client, "/batches")
    assert reason(soup, first) == ("behind", f"waiting for batch {running} (#1 starts next)")
    assert reason(soup, second) == ("behind", f"waiting for batch {running} (1 queued ahead)")


def test_waiting_reason_when_nothing_runs_and_start_is_offered(
    client: FlaskClient, make: Factory, live_worker: Any
) -> None:
    """A head that waits with nothing running and no pause is a lost promotion: it is starting, Start promotes it."""
    first, second = make.batch("queued", 1), make.batch("queued", 2)
    soup = soup_of(client, "/batches")
    assert reason(soup, first) == ("starting", "starting")
    assert reason(soup, second) == ("behind", f"waiting for batch {first} (#1) to start")
    button = soup.select_one("#start-button")
    assert button is not None and not button.has_attr("disabled")


def test_waiting_reason_follows_the_workers_heartbeat(client: FlaskClient, make: Factory, live_worker: Any) -> None:
    """The same row, read again once the worker's heartbeat stopped, blames the missing worker."""
    running = make.batch("in_progress", 0)
    queued = make.batch("queued", 1)
    assert reason(soup_of(client, "/batches"), queued) == ("behind", f"waiting for batch {running} (#1 starts next)")
    live_worker.stop()
    assert reason(soup_of(client, "/batches"), queued) == ("no_worker", "no worker is running")


# --- the start estimate ------------------------------------------------------------------------


def test_estimate_shows_when_there_is_history(
    client: FlaskClient, app: Flask, make: Factory, live_worker: Any, api: ApiClient
) -> None:
    """100 s per item lately: behind a running batch of 3 items, #1 starts in ≈300 s and #2 (after 2 more) ≈500 s."""
    make.history(seconds=1000, items=10)
    profiles = make.profiles(7)
    make.batch("in_progress", 0, profile_ids=profiles[:3])
    first = make.batch("queued", 1, profile_ids=profiles[3:5])
    second = make.batch("queued", 2, profile_ids=profiles[5:7])
    now = datetime.now(UTC)
    soup = soup_of(client, "/batches")
    for batch_id, seconds in ((first, 300), (second, 500)):
        eta = soup.select_one(f'tr[data-batch-id="{batch_id}"] .eta')
        assert eta is not None, f"row {batch_id} shows no estimate"
        assert eta.get_text(" ", strip=True).startswith("starts ≈")
        shown = eta.select_one("time[data-local-time]")
        assert shown is not None
        at = datetime.fromisoformat(shown["datetime"])
        assert abs((at - now).total_seconds() - seconds) < 15, (batch_id, at, now)
        # Without script the page reads HH:MM in UTC; app.js turns it into the browser's time.
        assert shown.get_text(strip=True) == at.astimezone(UTC).strftime("%H:%M")
        from_api = api.get(f"/batches/{batch_id}").get_json()["estimated_start_at"]
        assert from_api is not None
        assert abs((datetime.fromisoformat(from_api) - at).total_seconds()) < 15


def test_estimate_is_absent_without_history(client: FlaskClient, make: Factory, live_worker: Any) -> None:
    """No finished batch to go by: no guess, though the row still says why it waits."""
    profiles = make.profiles(3)
    running = make.batch("in_progress", 0, profile_ids=profiles[:2])
    queued = make.batch("queued", 1, profile_ids=profiles[2:])
    soup = soup_of(client, "/batches")
    row = soup.select_one(f'tr[data-batch-id="{queued}"]')
    assert row is not None
    assert row.select(".eta, .eta time[data-local-time]") == []
    assert reason(soup, queued) == ("behind", f"waiting for batch {running} (#1 starts next)")
