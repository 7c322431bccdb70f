"""Celery settings for long, strictly serialized batches. Broker URLs come from app/config.py."""

from kombu import Queue

# Batch runs get a queue of their own, so the queue.* tasks (promotion, recovery,
# a repair round on demand) never wait behind a running batch.
task_queues = (Queue("batches"), Queue("control"))
task_default_queue = "control"
task_routes = {
    "batches.run": {"queue": "batches"},
    "queue.*": {"queue": "control"},
}
task_create_missing_queues = False

# JSON only: tasks carry ids, never pickled objects.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# Ack after the task ran, so a message whose worker vanishes is delivered again;
# duplicates are harmless (run lease and dispatch token, promotion idempotent).
task_acks_late = True
# ...but a pool child killed mid-run must still fire task_failure, whose handler
# recovers the run at once (queue.recover_run); requeueing would silence it.
task_reject_on_worker_lost = False
# One message at a time per process: a worker must not hoard the next batch run.
worker_prefetch_multiplier = 1
# A broker connection blip restores the running message, and its copy runs beside
# it: the copy finds the run's lease taken and returns at once, so the running
# batch is left to go on (cancelling it would only redo its current item).
worker_cancel_long_running_tasks_on_connection_loss = False
# Stopping the worker (the Procfile remaps SIGTERM to a cold shutdown) waits this
# long for a running batch, then cancels it and puts its message back at once, so
# the restarted worker resumes the batch at its interrupted item. Plain SIGTERM
# would wait for the whole batch, hours perhaps; honcho and most supervisors
# kill after a few seconds, and the batch then waits for a repair round to find it lost.
worker_soft_shutdown_timeout = 3.0

# Measured from delivery and never refreshed: keep it above the longest batch we
# expect. A longer one is redelivered, finds the lease taken and returns at once.
_VISIBILITY_TIMEOUT = 6 * 3600
broker_transport_options = {"visibility_timeout": _VISIBILITY_TIMEOUT}
result_backend_transport_options = {"visibility_timeout": _VISIBILITY_TIMEOUT}

# batches.run has no time limit: a batch may take hours, and a task-wide limit would
# kill it mid-item. Each item has its own instead (the batch's item_timeout, enforced
# by the run's watcher, app/services/runs/watcher.py). The queue.* tasks are short and declare
# theirs on the task (tasks/queue.py).
result_expires = 24 * 3600
task_ignore_result = True
# A worker outlives any broker outage: it keeps reconnecting (with backoff) instead
# of exiting after Celery's default 100 attempts.
broker_connection_retry_on_startup = True
broker_connection_max_retries = None

# Flower sees tasks only through events.
worker_send_task_events = True
task_send_sent_event = False
task_track_started = False

# The repair rounds (the reconciler), the real guarantee that the queue moves if a
# signal was lost or a worker died, run every RECONCILE_INTERVAL seconds on timers
# inside every worker and beat (workers/liveness.py), not as a scheduled task: beat
# schedules nothing (app/tasking.py). Handoffs don't wait for them.
# With nothing scheduled there is nothing to remember between starts: beat keeps its
# (empty) schedule in memory, so it needs no file and no ./var/ of a deployment.
beat_scheduler = "celery.beat:Scheduler"

timezone = "UTC"
enable_utc = True
