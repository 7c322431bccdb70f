"""Entry point for `celery -A workers.celery_app ...` (worker, beat, flower)."""

from celery.signals import worker_process_init

from app import create_app
from app.extensions import db
from workers.database import WORKER_ENGINE_OPTIONS, commit_without_waiting_for_disk

flask_app = create_app(SQLALCHEMY_ENGINE_OPTIONS=WORKER_ENGINE_OPTIONS)
with flask_app.app_context():
    commit_without_waiting_for_disk(db.engine)
celery_app = flask_app.extensions["celery"]
celery_app.conf.update(include=["tasks.batches", "tasks.queue"])

# Connect the promotion chain, the SIGTERM hand-back and the log filter.
from workers import hand_back, liveness, quiet_logs, signals  # noqa: E402,F401

# Heartbeats and repair rounds in every worker and beat.
liveness.install(flask_app)


@worker_process_init.connect
def dispose_pool_after_fork(**_: object) -> None:
    """Forked pool children must not share the parent's database connections."""
    with flask_app.app_context():
        db.engine.dispose(close=False)
