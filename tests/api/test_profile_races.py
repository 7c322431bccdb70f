"""Races on profiles against real PostgreSQL: the same import twice at once, a delete against a new batch.

A third connection holds a lock both requests need, so they are surely in
flight together; it lets go once both are seen waiting on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection

from app.extensions import db
from tests.api.test_profile_changes import set_status
from tests.api.test_profile_import import CSV, post_file
from tests.conftest import ApiClient, wait_for

WAITING = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


@contextmanager
def held(app: Flask, sql: str, **parameters: Any) -> Iterator[Connection]:
    """Hold a lock taken by `sql` until the block ends; yields the connection to count waiters with."""
    with app.app_context(), db.engine.connect() as connection:
        connection.execute(db.text(sql), parameters)
        try:
            yield connection
        finally:
            connection.commit()


def waiters(connection: Connection) -> int:
    """Backends of this database waiting on a lock (the holder's own snapshot-free read)."""
    with connection.engine.connect() as other:
        return other.execute(db.text(WAITING)).scalar() or 0


def start(api: ApiClient, app: Flask, request: Callable[[ApiClient], Any]) -> tuple[threading.Thread, list[Any]]:
    """Send a request from a thread with a client of its own; the list receives the response."""
    client = ApiClient(app.test_client(), api.headers["Authorization"].split(" ", 1)[1])
    answer: list[Any] = []
    thread = threading.Thread(target=lambda: answer.append(request(client)))
    thread.start()
    return thread, answer


def test_the_same_import_twice_at_once_both_succeed_without_duplicates(api: ApiClient, app: Flask) -> None:
    api.post("/profiles", {"name": "p0000", "attributes": {"old": 1}})
    content = "name,tags,n\n" + "".join(f"p{index:04d},race,{index}\n" for index in range(500))
    with held(app, "LOCK TABLE profiles IN SHARE ROW EXCLUSIVE MODE") as locker:
        runs = [start(api, app, lambda client: post_file(client, content, CSV)) for _ in range(2)]
        wait_for(lambda: waiters(locker) == 2)
    for thread, _ in runs:
        thread.join(30)
    results = [answer[0] for _, answer in runs]
    assert [r.status_code for r in results] == [200, 200], [r.get_json() for r in results]
    bodies = sorted((r.get_json() for r in results), key=lambda body: body["created"])
    assert all(body["created"] + body["updated"] == 500 for body in bodies)
    assert bodies[0]["created"] + bodies[1]["created"] == 499  # p0000 existed before
    listing = api.get("/profiles?tag=race&per_page=500").get_json()
    assert listing["total"] == 500
    assert len({p["name"] for p in listing["items"]}) == 500
    assert api.get("/profiles?q=p0000").get_json()["items"][0]["attributes"] == {"n": "0"}


@pytest.mark.parametrize("first", ["delete", "batch"])
def test_delete_against_a_new_batch_picking_the_profile_lets_exactly_one_win(
    api: ApiClient, app: Flask, counts: Any, first: str
) -> None:
    ids = api.profiles(2)
    # A finished batch refers to the profile, so the delete only marks it deleted: the row stays,
    # and only the locks (not the foreign key) can keep a new batch from picking it.
    done = api.batch(ids)
    set_status(app, done["id"], "done")
    requests = {
        "delete": lambda client: client.client.delete(f"/api/v1/profiles/{ids[0]}", headers=client.headers),
        "batch": lambda client: client.post("/batches", {"name": "new", "profile_ids": ids, "processor": "noop"}),
    }
    second = "batch" if first == "delete" else "delete"
    with held(app, "SELECT 1 FROM profiles WHERE id = :id FOR UPDATE", id=ids[0]) as locker:
        runs = {first: start(api, app, requests[first])}
        wait_for(lambda: waiters(locker) == 1)
        runs[second] = start(api, app, requests[second])
        wait_for(lambda: waiters(locker) == 2)
    for thread, _ in runs.values():
        thread.join(30)
    codes = {name: answer[0].status_code for name, (_, answer) in runs.items()}
    if first == "delete":
        assert codes == {"delete": 204, "batch": 422}
        assert counts()["batches"] == 1
        assert api.get(f"/profiles/{ids[0]}").status_code == 404
    else:
        assert codes == {"batch": 201, "delete": 409}
        assert counts()["batches"] == 2
        assert api.get(f"/profiles/{ids[0]}").status_code == 200
