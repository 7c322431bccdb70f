"""Entry point for `celery -A workers.celery_app ...` (worker, beat, flower)."""

from celery.signals import worker_process_init

from app import ENGINE_OPTIONS, create_app
from app.extensions import db

# No ping before each use of a pooled connection: it is a round trip to
# PostgreSQL at three steps of the handoff between two batches (0.6 ms of its
# 8, measured). A connection that died with a PostgreSQL restart fails its first
# statement instead; SQLAlchemy then replaces every connection of that pool, and
# the task is repaired as after any database error: promotions retry, a failed
# run is recovered at once (tests/faults/test_database_faults.py).
flask_app = create_app(SQLALCHEMY_ENGINE_OPTIONS={**ENGINE_OPTIONS, "pool_pre_ping": False})
celery_app = flask_app.extensions["celery"]
celery_app.conf.update(include=["tasks.batches", "tasks.queue"])

# Connect the promotion chain, the SIGTERM hand-back and the log filter.
from workers import hand_back, quiet_logs, signals  # noqa: E402,F401


@worker_process_init.connect
def dispose_pool_after_fork(**_: object) -> None:
    """Forked pool children must not share the parent's database connections."""
    with flask_app.app_context():
        db.engine.dispose(close=False)
