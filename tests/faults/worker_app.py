"""A real `celery worker` for the fault tests: the project's own entry point on the tests' Redis keys.

Run as `celery -A tests.faults.worker_app:celery_app worker ...`. The app is built
exactly as in production, from Settings read from the environment (DATABASE_URL,
REDIS_URL, BATCH_HEARTBEAT_TIMEOUT, PROCESSOR_MODULES, ...); the only addition is
BATCHQ_TEST_KEYPREFIX, which keeps this worker's queues apart from every other
worker on the same Redis (the in-process test worker included).
"""

import os

from workers.celery_app import celery_app, flask_app

__all__ = ["celery_app", "flask_app"]

_PREFIX = os.environ["BATCHQ_TEST_KEYPREFIX"]
celery_app.conf.broker_transport_options = {
    **celery_app.conf.broker_transport_options,
    "global_keyprefix": _PREFIX,
}
celery_app.conf.result_backend_transport_options = {
    **celery_app.conf.result_backend_transport_options,
    "global_keyprefix": _PREFIX,
}
