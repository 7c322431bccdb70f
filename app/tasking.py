"""The Celery application, bound to the Flask app so every task runs in an app context."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask

from app.redis_transport import transport_for


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from celeryconfig.py and the app's settings (Flask's pattern)."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.update(
        broker_url=app.config["CELERY_BROKER_URL"],
        broker_transport=transport_for(app.config["CELERY_BROKER_URL"]),
        result_backend=app.config["REDIS_URL"],
    )
    # Nothing is scheduled as a task: the repair rounds run on timers inside every
    # worker and beat (workers/liveness.py), out of Flower's task list.
    celery_app.conf.beat_schedule = {}
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
