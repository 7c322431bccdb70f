"""Bare Celery for the handoff baseline: `celery -A bench.bare_celery worker`.

No Flask app and no batchq code: kombu's own Redis transport and plain tasks,
with the settings of celeryconfig.py (acks, prefetch, queues, events), so the
baseline is what one hop costs Celery itself with the batchq worker's settings.
"""

import os

from celery import Celery

celery_app = Celery("bare", broker=os.environ["REDIS_URL"], set_as_current=True)
celery_app.config_from_object("celeryconfig")
celery_app.conf.update(include=["bench.baseline"])
