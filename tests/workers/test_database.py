"""A worker's database settings (workers/database.py), on the session's real PostgreSQL."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import create_engine, text

from app.extensions import db
from workers.database import WORKER_ENGINE_OPTIONS, commit_without_waiting_for_disk


def test_worker_connections_commit_without_waiting_for_disk_and_the_web_apps_wait(app: Flask) -> None:
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], **WORKER_ENGINE_OPTIONS)
    commit_without_waiting_for_disk(engine)
    try:
        with engine.connect() as first, engine.connect() as second:  # two connections, each set up
            for connection in (first, second):
                assert connection.execute(text("SHOW synchronous_commit")).scalar() == "off"
                connection.execute(text("SELECT 1"))
                connection.commit()  # the setting is the session's, not the first transaction's
                assert connection.execute(text("SHOW synchronous_commit")).scalar() == "off"
        with app.app_context():
            assert db.session.execute(text("SHOW synchronous_commit")).scalar() == "on"
            db.session.rollback()
    finally:
        engine.dispose()
