"""A batch's log over the API: the level floor, paging back and forth, bad input, downloads, commit order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection

from app.extensions import db
from app.services import logs
from tests.api.conftest import assert_error, assert_iso
from tests.conftest import ApiClient, wait_for
from tests.views.conftest import LOG_CYCLE, Factory


@pytest.fixture
def batch_id(api: ApiClient, app: Flask) -> int:
    """A batch whose log is its "created" and "started" lines, then lines 1..60 (no run: nothing else comes)."""
    batch = api.batch(api.profiles(1))
    Factory(app).log(batch["id"], 60)
    return int(batch["id"])


def _lines(api: ApiClient, batch_id: int, query: str = "") -> list[dict[str, Any]]:
    response = api.get(f"/batches/{batch_id}/logs?{query}")
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["items"])


def _messages(api: ApiClient, batch_id: int, query: str = "") -> list[str]:
    return [line["message"] for line in _lines(api, batch_id, query)]


def _numbered(level: str) -> list[str]:
    """Of lines 1..60, those at `level` or above."""
    floor = logs.LEVELS.index(level)
    return [f"line {g}" for g in range(1, 61) if logs.LEVELS.index(LOG_CYCLE[(g - 1) % 6]) >= floor]


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_logs_level_keeps_that_level_and_above(api: ApiClient, batch_id: int, level: str) -> None:
    body = api.get(f"/batches/{batch_id}/logs?level={level}&per_page=500").get_json()
    numbered = [m for m in (line["message"] for line in body["items"]) if m.startswith("line ")]
    assert numbered == _numbered(level)
    assert body["total"] == len(body["items"])
    floor = logs.LEVELS.index(level)
    assert all(logs.LEVELS.index(line["level"]) >= floor for line in body["items"])


def test_logs_level_debug_is_every_line(api: ApiClient, batch_id: int) -> None:
    assert _messages(api, batch_id, "level=debug&per_page=500") == _messages(api, batch_id, "per_page=500")
    assert len(_messages(api, batch_id, "per_page=500")) == 62


def test_logs_before_returns_the_lines_just_before_it_oldest_first(api: ApiClient, batch_id: int) -> None:
    every = _lines(api, batch_id, "per_page=500")
    bound = every[40]["id"]
    body = api.get(f"/batches/{batch_id}/logs?before={bound}&per_page=5").get_json()
    assert body["items"] == every[35:40]
    assert body["total"] == 40  # lines left before the bound, the page's among them
    assert _lines(api, batch_id, f"before={bound}&per_page=5&page=2") == every[30:35]
    assert _lines(api, batch_id, f"before={every[2]['id']}&per_page=5") == every[:2]
    assert _lines(api, batch_id, f"before={every[0]['id']}") == []


def test_logs_paging_back_and_forth_with_a_level_reaches_every_line_once(api: ApiClient, batch_id: int) -> None:
    back: list[str] = []
    bound = 2**63 - 1
    while page := _lines(api, batch_id, f"level=warning&before={bound}&per_page=4"):
        back = [line["message"] for line in page] + back
        bound = page[0]["id"]
    forth: list[str] = []
    cursor = 0
    while page := _lines(api, batch_id, f"level=warning&after={cursor}&per_page=4"):
        forth += [line["message"] for line in page]
        cursor = page[-1]["id"]
    assert back == forth == _numbered("warning")


def test_logs_level_pages_stay_in_id_order_across_levels(api: ApiClient, batch_id: int) -> None:
    page = _lines(api, batch_id, "level=info&per_page=7&page=2")
    assert [line["message"] for line in page] == _numbered("info")[5:12]  # after "created" and "started"
    assert [line["id"] for line in page] == sorted(line["id"] for line in page)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("level=verbose", "level"),
        ("level=INFO", "level"),
        ("level=", "level"),
        ("before=-1", "before"),
        ("before=x", "before"),
        ("after=1.5", "after"),
        (f"before={2**63}", "before"),
        ("after=1&before=9", "before"),
        ("per_page=0", "per_page"),
        ("per_page=501", "per_page"),
    ],
)
def test_logs_bad_input_is_422_naming_the_field(
    api: ApiClient, batch_id: int, counts: Any, query: str, field: str
) -> None:
    before = counts()
    error = assert_error(api.get(f"/batches/{batch_id}/logs?{query}"), 422, field)
    assert field in error["message"] or error["fields"][field]
    assert counts() == before


@pytest.mark.parametrize("path", ["/logs", "/logs.txt", "/logs.jsonl"])
def test_logs_of_an_unknown_batch_are_404(api: ApiClient, batch_id: int, path: str) -> None:
    assert_error(api.get(f"/batches/{batch_id + 1000}{path}"), 404)


def test_log_downloads_need_a_token(api: ApiClient, batch_id: int) -> None:
    assert_error(api.client.get(f"/api/v1/batches/{batch_id}/logs.txt"), 401)


# --- downloads of a 20,000-line log -----------------------------------------------------


@pytest.fixture
def long_log(api: ApiClient, app: Flask, batch_id: int) -> int:
    Factory(app).log(batch_id, 20_000 - 62)  # its first 62 lines are there already
    return batch_id


def _chunks(response: Any) -> list[str]:
    assert response.status_code == 200
    assert response.is_streamed
    return [chunk.decode() for chunk in response.iter_encoded()]


def test_log_download_txt_streams_the_whole_log_in_keyset_pages(api: ApiClient, long_log: int) -> None:
    response = api.get(f"/batches/{long_log}/logs.txt", buffered=False)
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Disposition"] == f'attachment; filename="batch-{long_log}-log.txt"'
    chunks = _chunks(response)
    assert [chunk.count("\n") for chunk in chunks] == [logs.EXPORT_CHUNK] * 4
    lines = "".join(chunks).splitlines()
    every = [(line["at"], line["level"], line["message"]) for line in _lines(api, long_log, "per_page=3")]
    assert [tuple(line.split(" ", 2)) for line in lines[:3]] == every
    assert lines[-1].endswith(" error line 19938")
    assert_iso(lines[-1].split(" ", 1)[0])


def test_log_download_jsonl_is_one_api_object_a_line(api: ApiClient, long_log: int) -> None:
    response = api.get(f"/batches/{long_log}/logs.jsonl", buffered=False)
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Content-Disposition"] == f'attachment; filename="batch-{long_log}-log.jsonl"'
    objects = [json.loads(line) for line in "".join(_chunks(response)).splitlines()]
    assert len(objects) == 20_000
    assert objects[:50] == _lines(api, long_log, "per_page=50")
    assert [o["id"] for o in objects] == sorted({o["id"] for o in objects})


# --- paging never skips a line committed out of id order ------------------------------


@pytest.fixture
def connections(app: Flask) -> Iterator[tuple[Connection, Connection]]:
    with app.app_context():
        early, late = db.engine.connect(), db.engine.connect()
        try:
            yield early, late
        finally:
            early.close()
            late.close()


_INSERT = db.text("INSERT INTO batch_logs (batch_id, at, level, message) VALUES (:id, now(), 'info', :message)")


def _waits_on_a_lock(app: Flask, pid: int) -> bool:
    with app.app_context():
        waiting = db.session.scalar(
            db.text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
        db.session.remove()
    return bool(waiting)


def test_log_paging_after_never_skips_a_line_committed_out_of_id_order(
    api: ApiClient, app: Flask, batch_id: int, connections: tuple[Connection, Connection]
) -> None:
    early, late = connections
    late_pid = late.execute(db.text("SELECT pg_backend_pid()")).scalar()
    late.commit()
    cursor = _lines(api, batch_id, "per_page=500")[-1]["id"]

    early.execute(_INSERT, {"id": batch_id, "message": "early"})  # takes its id first, commits last

    def insert_late() -> None:
        late.execute(_INSERT, {"id": batch_id, "message": "late"})
        late.commit()

    thread = threading.Thread(target=insert_late)
    thread.start()
    try:
        # Unordered, the late line is committed by now under a higher id; ordered, its insert waits for early.
        wait_for(lambda: not thread.is_alive() or _waits_on_a_lock(app, late_pid), timeout=10)
        seen = _lines(api, batch_id, f"after={cursor}")
        if seen:
            cursor = seen[-1]["id"]
        early.commit()
    finally:
        thread.join(timeout=10)
    seen += _lines(api, batch_id, f"after={cursor}")
    assert [line["message"] for line in seen] == ["early", "late"]
