"""Several hosts, one queue: two worker hosts, two web servers and two beats on one database and one broker.

The soak of bench.several_hosts at a small size: batches go in alternately
through both web servers while the queue runs, a worker host is SIGKILLed
(its whole process group) and started again every 20 finished batches, and the
queue's rules (bench.invariants) are checked after every kill and at the end.
BATCH_HEARTBEAT_TIMEOUT and RECONCILE_INTERVAL are shortened (3 s, 1 s) as in
the soak, so that each recovery takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app.config import Settings
from bench.cluster import Cluster
from bench.hosts_soak import Soak
from tests.conftest import RedisServer, insert_profiles, make_token
from tests.workers.test_procfile_start import deployment_env

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]

BATCHES = 60
KILL_EVERY = 20


@pytest.fixture
def cluster(settings: Settings, tmp_path: Path, without_workers: None, own_redis: RedisServer) -> Iterator[Cluster]:
    redis_url = own_redis.url  # the hosts' queues are unprefixed, as in a deployment: they meet no one's
    env = deployment_env(
        settings,
        tmp_path,
        SECRET_KEY="several-hosts-test",
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        BATCH_HEARTBEAT_TIMEOUT="3",
        RECONCILE_INTERVAL="1",
    )
    cluster = Cluster(env, tmp_path / "hosts")
    try:
        cluster.start()
        yield cluster
        cluster.stop()
    finally:
        cluster.kill_leftovers()


def test_two_hosts_keep_the_queue_rules_through_worker_kills(app: Flask, cluster: Cluster) -> None:
    token = make_token(app, "hosts")
    with app.app_context():
        profile_ids = insert_profiles(2, "hosts")
        result = Soak(cluster, token, profile_ids).run(BATCHES, KILL_EVERY, timeout=150)

    assert not result.timed_out, result
    for kill in result.kills:
        assert kill.violations == [], f"after the kill of {kill.host} at {kill.finished} finished"
        assert kill.recovery is not None, f"nothing ran after the kill of {kill.host}"
    assert result.final_violations == []
    assert len(result.kills) == BATCHES // KILL_EVERY - 1
    assert result.statuses == {"done": BATCHES}
    assert result.submitted_per_host == {"host-a": BATCHES // 2, "host-b": BATCHES // 2}
    assert sum(result.ran_per_host.values()) == BATCHES
    for host in cluster.hosts:
        assert host.workers_started == 1 + sum(kill.host == host.name for kill in result.kills)
        assert not (host.directory / "var").exists()  # a host needs no ./var/ of its own
