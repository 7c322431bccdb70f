"""The Celery application, bound to the Flask app so every task runs in an app context."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import before_task_publish
from flask import Flask

from app import logging_setup
from app.redis_transport import transport_for
from app.services.dispatch import RUN_BATCH_TASK

# The message header that carries the request id from the sender to the task (workers/task_logs.py reads it).
REQUEST_ID_HEADER = "batchq_request_id"


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


@before_task_publish.connect
def carry_request_id(
    sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """Put the sender's request id on every task message, in one place, so that one grep follows the work.

    From a request: on everything it sends. From a task: on its own follow-ups
    (a run's promotion, a recovery's new dispatch of the same batch), but not on
    another batch's run that a promotion starts: that run is not the request's
    work, and the id would otherwise ride down the whole queue. Costs a dict
    write, no round trip.
    """
    context = logging_setup.current()
    if context.request_id is None or headers is None:
        return
    if context.task_id is not None and sender == RUN_BATCH_TASK and _batch_of(body) != context.batch_id:
        return
    headers[REQUEST_ID_HEADER] = context.request_id


def _batch_of(body: Any) -> Any:
    # Protocol 2 bodies are (args, kwargs, embed); a run's first argument is its batch's id.
    try:
        return body[0][0]
    except (IndexError, KeyError, TypeError):
        return None
