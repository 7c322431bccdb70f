"""Entry point for `celery -A workers.celery_app ...` (worker, beat, flower)."""

from celery.signals import worker_process_init, worker_ready

from app import create_app
from app.extensions import db
from workers.database import WORKER_ENGINE_OPTIONS, commit_without_waiting_for_disk

flask_app = create_app(SQLALCHEMY_ENGINE_OPTIONS=WORKER_ENGINE_OPTIONS)
with flask_app.app_context():
    commit_without_waiting_for_disk(db.engine)
celery_app = flask_app.extensions["celery"]
celery_app.conf.update(include=["tasks.batches", "tasks.queue"])

# Connect the promotion chain, the SIGTERM hand-back, the log filter and the tasks' log context.
from workers import hand_back, liveness, quiet_logs, signals, task_logs  # noqa: E402,F401

task_logs.install(celery_app, flask_app.config["SETTINGS"].log_format)

# Heartbeats and repair rounds in every worker and beat.
liveness.install(flask_app)


@worker_process_init.connect
def dispose_pool_after_fork(**_: object) -> None:
    """Forked pool children must not share the parent's database connections."""
    with flask_app.app_context():
        db.engine.dispose(close=False)


@worker_ready.connect
def serve_worker_metrics(**_: object) -> None:
    """With WORKER_METRICS_PORT, serve this host's metrics files (no web process needed on the host)."""
    from workers.metrics import serve

    serve(flask_app.config["SETTINGS"].worker_metrics_port)
