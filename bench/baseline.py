"""The handoff baseline: a bare task whose task_success handler dispatches the next one."""

import functools
import time

import redis
from celery import current_app, shared_task
from celery.signals import task_success


@shared_task(name="bench.ping")
def ping(index: int, total: int) -> tuple[int, int]:
    """Do nothing but record when this task started."""
    ping.request.bench_started = time.time()  # type: ignore[attr-defined]
    return index, total


@task_success.connect
def chain_next_ping(sender=None, result=None, **_: object) -> None:  # type: ignore[no-untyped-def]
    """Record the end of this ping and send the next, as the promotion chain does for batches."""
    if getattr(sender, "name", None) != "bench.ping":
        return
    ended = time.time()
    index, total = result
    if index + 1 < total:
        # As the promotion chain sends: no result subscription (see app/services/dispatch.py).
        sender.app.send_task("bench.ping", args=[index + 1, total], queue="control", ignore_result=True)
    _recorder().rpush("bench:baseline", f"{sender.request.bench_started},{ended}")


@functools.cache
def _recorder() -> redis.Redis:
    """One connection per process for the marks, so recording them costs the chain nothing."""
    return redis.Redis.from_url(current_app.conf.broker_url)


@shared_task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """The items benchmark's baseline: one no-op task per item, as a plain Celery user would send them."""
