"""/metrics of a real stack: gunicorn with two workers as the Procfile runs it, a real Celery worker subprocess.

After a run of batches (some items failing), several scrapes, answered by both
web workers, agree with each other and with the database: items by outcome,
batches by status, one handoff per batch that waited for another's end, one
time-queued observation per start, and the HTTP requests by route.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy import text

from app.config import Settings
from app.extensions import db
from bench import processes
from tests.conftest import SESSION_TAG, RedisServer, make_token, wait_for
from tests.metrics.scrapes import samples, total, value
from tests.workers.test_procfile_start import ROOT, deployment_env, free_port, procfile_argv

TERMINAL = ("done", "failed", "stopped", "cancelled")


@dataclass
class Stack:
    url: str
    web: subprocess.Popen[bytes]
    metrics_dir: Path
    token: str
    worker_metrics_port: int

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def stack(
    app: Flask, settings: Settings, tmp_path: Path, without_workers: None, own_redis: RedisServer
) -> Iterator[Stack]:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = deployment_env(
        settings,
        tmp_path,
        SECRET_KEY="metrics-test",
        REDIS_URL=own_redis.url,  # this stack's queues are unprefixed: they meet no one's
        METRICS_DIR=str(metrics_dir),
        PORT=str(port),
        WEB_WORKERS="2",
    )
    worker_metrics_port = free_port()
    worker = processes.start_worker(
        {**env, "WORKER_METRICS_PORT": str(worker_metrics_port)},
        "-n",
        f"metrics-{SESSION_TAG}@%h",
        "--without-gossip",
        "--without-mingle",
        concurrency=2,
        log=tmp_path / "worker.log",
    )
    with (tmp_path / "web.log").open("wb") as out:
        web = subprocess.Popen(
            procfile_argv("web"), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack = Stack(f"http://127.0.0.1:{port}", web, metrics_dir, make_token(app, "scraper"), worker_metrics_port)

    def healthy() -> bool:
        assert web.poll() is None, (tmp_path / "web.log").read_text()[-3000:]
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        try:
            return requests.get(stack.url + "/api/v1/health", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or still loading the app
            return False

    try:
        wait_for(healthy, timeout=90, interval=0.2)
        yield stack
    finally:
        processes.stop(web)
        processes.stop(worker, timeout=20)


def _database_counts(app: Flask) -> tuple[dict[str, int], dict[tuple[str, str], int], int]:
    """Batches by status, items by (processor, status), and the promotions that were handoffs, from the database."""
    with app.app_context():
        batches = dict(db.session.execute(text("SELECT status, count(*) FROM batches GROUP BY status")).all())
        items = {
            (processor, status): count
            for processor, status, count in db.session.execute(
                text(
                    "SELECT b.processor, i.status, count(*) FROM batch_items i JOIN batches b ON b.id = i.batch_id"
                    " GROUP BY b.processor, i.status"
                )
            ).all()
        }
        # A start is a handoff when the batch was created before the last end that preceded its start.
        handoffs = db.session.scalar(
            text(
                "SELECT count(*) FROM batches b, LATERAL (SELECT max(p.finished_at) AS at FROM batches p"
                " WHERE p.status IN ('done', 'failed') AND p.finished_at <= b.started_at) previous"
                " WHERE b.started_at IS NOT NULL AND b.created_at <= previous.at"
            )
        )
        db.session.rollback()
    return batches, items, int(handoffs or 0)


def test_metrics_of_a_two_worker_web_and_a_celery_worker_agree_with_the_database(app: Flask, stack: Stack) -> None:
    profiles = [stack.post("/api/v1/profiles", {"name": name}).json()["id"] for name in ("alice", "bob", "carol")]
    plans = [
        ("sleep", {"seconds": 0.3, "fail_profiles": ["bob"]}),
        ("noop", {}),
        ("sleep", {"seconds": 0.05}),
        ("sleep", {"seconds": 0.05, "fail_profiles": ["alice", "carol"]}),
        ("noop", {}),
    ]
    ids = []
    for index, (processor, parameters) in enumerate(plans):
        body = {"name": f"m{index}", "profile_ids": profiles, "processor": processor, "parameters": parameters}
        response = stack.post("/api/v1/batches", body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    def all_ended() -> bool:
        return all(stack.get(f"/api/v1/batches/{batch_id}").json()["status"] in TERMINAL for batch_id in ids)

    wait_for(all_ended, timeout=60, interval=0.1)

    # Scrape until both web workers have answered requests (each keeps files of its own, by pid).
    scrapes: list[str] = []

    def both_served() -> bool:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: requests.get(stack.url + "/metrics", timeout=10), range(8)))
        assert all(answer.status_code == 200 for answer in answers)
        scrapes.extend(answer.text for answer in answers)
        gunicorn = _children(stack.web.pid)  # the Procfile's line execs gunicorn: its workers are the children
        pids = {int(path.stem.rsplit("_", 1)[1]) for path in stack.metrics_dir.glob("*.db")}
        return len(gunicorn) == 2 and gunicorn <= pids

    wait_for(both_served, timeout=60, interval=0.1)
    batches, items, handoffs = _database_counts(app)
    assert handoffs >= 3  # the batches were created while the first (about a second long) ran

    for scrape in scrapes[-4:]:
        found = samples(scrape)
        for status in ("queued", "in_progress", "stopping", "done", "failed", "stopped", "cancelled"):
            assert value(found, "batchq_batches", status=status) == batches.get(status, 0), status
        assert value(found, "batchq_queue_length") == 0
        assert value(found, "batchq_workers_alive") == 1
        for (processor, status), count in items.items():
            assert value(found, "batchq_items_total", processor=processor, outcome=status) == count
        assert total(found, "batchq_items_total") == sum(items.values()) == 15
        assert total(found, "batchq_item_duration_seconds_count") == 15
        assert value(found, "batchq_handoff_seconds_count") == handoffs
        assert value(found, "batchq_time_queued_seconds_count") == len(plans)
        posted = {"method": "POST", "status": "201"}
        assert total(found, "batchq_http_requests_total", route="/api/v1/batches", **posted) == len(plans)
        assert total(found, "batchq_http_requests_total", route="/api/v1/profiles", **posted) == 3
        assert total(found, "batchq_http_request_duration_seconds_count", route="/api/v1/profiles", **posted) == 3
        assert total(found, "batchq_http_requests_total", route="/metrics") == 0  # the scrapes are not counted
    assert items[("sleep", "failed")] == 3 and items[("sleep", "succeeded")] == 6

    # The worker's own port serves the same host's files, without the database's gauges.
    on_worker = samples(requests.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics", timeout=10).text)
    assert total(on_worker, "batchq_items_total") == 15
    assert value(on_worker, "batchq_handoff_seconds_count") == handoffs
    assert not any(name == "batchq_queue_length" for name, _ in on_worker)
