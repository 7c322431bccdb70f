"""Fixtures for the page tests: a signed-in test client and batches in any state.

Batches are written straight into the tables (no queue manager, so no run is
dispatched and no worker can move them): these tests check what the pages
show for a state, not how the state is reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Batch, BatchItem, BatchLog, Profile
from app.models._types import utcnow
from tests.conftest import PASSWORD


@pytest.fixture
def client(app: Flask, user: str) -> Iterator[FlaskClient]:
    """A test client signed in as alice."""
    with app.test_client() as test_client:
        response = test_client.post("/login", data={"username": user, "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)
        yield test_client


@pytest.fixture
def csrf(app: Flask) -> Iterator[None]:
    """CSRF checks on, as in production (the session app turns them off)."""
    app.config["WTF_CSRF_ENABLED"] = True
    yield
    app.config["WTF_CSRF_ENABLED"] = False


# The levels of the lines Factory.log writes, repeating.
LOG_CYCLE = ["debug", "info", "info", "warning", "info", "error"]


class Factory:
    """Writes profiles and batches in a chosen state, committed."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.count = 0

    def profiles(self, count: int, prefix: str = "p") -> list[int]:
        with self.app.app_context():
            rows = [Profile(name=f"{prefix}-{i}", attributes={}) for i in range(count)]
            db.session.add_all(rows)
            db.session.commit()
            ids = [row.id for row in rows]
            db.session.remove()
        return ids

    def tag(self, profile_ids: list[int], *tags: str) -> None:
        """Give the profiles exactly these tags."""
        with self.app.app_context():
            db.session.execute(
                db.text("UPDATE profiles SET tags = :tags WHERE id = ANY(:ids)"),
                {"tags": list(tags), "ids": profile_ids},
            )
            db.session.commit()
            db.session.remove()

    def batch(self, status: str, position: int | None = None, **values: Any) -> int:
        """Insert a batch with `status` and `position` (and one item per given profile)."""
        self.count += 1
        now = utcnow()
        profile_ids = values.pop("profile_ids", [])
        with self.app.app_context():
            batch = Batch(
                name=values.pop("name", f"batch {self.count}"),
                status=status,
                queue_rank=position * 1000 if status == "queued" and position is not None else None,
                processor=values.pop("processor", "noop"),
                parameters={},
                profile_ids=profile_ids,
                total_items=values.pop("total_items", len(profile_ids)),
                created_at=values.pop("created_at", now - timedelta(seconds=100 - self.count)),
                created_by=values.pop("created_by", "tests"),
                **values,
            )
            db.session.add(batch)
            db.session.flush()
            for index, profile_id in enumerate(profile_ids):
                db.session.add(BatchItem(batch_id=batch.id, position=index, profile_id=profile_id))
            db.session.add(BatchLog(batch_id=batch.id, message=f"created {batch.name}"))
            db.session.commit()
            batch_id = batch.id
            db.session.remove()
        return batch_id

    def history(self, seconds: float, items: int) -> int:
        """A finished noop batch that ran `items` items in `seconds`, a minute ago: what estimates go by."""
        batch_id = self.batch("done")
        with self.app.app_context():
            db.session.execute(
                db.text(
                    "UPDATE batches SET started_at = now() - make_interval(secs => :seconds + 60),"
                    " finished_at = now() - interval '60 seconds', total_items = :items, succeeded_items = :items"
                    " WHERE id = :id"
                ),
                {"seconds": seconds, "items": items, "id": batch_id},
            )
            db.session.commit()
            db.session.remove()
        return batch_id

    def log(self, batch_id: int, count: int) -> None:
        """Append lines "line 1".."line COUNT" to a batch's log, their levels cycling through LOG_CYCLE."""
        with self.app.app_context():
            db.session.execute(
                db.text(
                    "INSERT INTO batch_logs (batch_id, at, level, message)"
                    " SELECT :id, now(), (CAST(:cycle AS text[]))[1 + (g - 1) % :period], 'line ' || g"
                    " FROM generate_series(1, :n) g ORDER BY g"
                ),
                {"id": batch_id, "n": count, "cycle": LOG_CYCLE, "period": len(LOG_CYCLE)},
            )
            db.session.commit()
            db.session.remove()

    def pause(self, by: str = "bob") -> None:
        with self.app.app_context():
            db.session.execute(
                db.text("UPDATE queue_state SET paused = true, paused_by = :by, paused_at = now()"), {"by": by}
            )
            db.session.commit()
            db.session.remove()


@pytest.fixture
def make(app: Flask, clean: None) -> Factory:
    return Factory(app)
