"""LOG_FORMAT=json on the Procfile's own web, worker and beat: every line they write is a JSON object with the keys,
and one request id finds the request, the run it started and the promotion that run's end sent."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from app.config import Settings
from app.embedded import redis_server
from bench import processes
from tests.conftest import SESSION_TAG, make_token, wait_for
from tests.workers.test_procfile_start import PROCFILE, ROOT, deployment_env, free_port

KEYS = {"time", "level", "logger", "message", "batch_id", "task_id", "request_id", "actor"}
FIRST, SECOND = "json-run-first", "json-run-second"


class Stack:
    """The Procfile's web, worker and beat with LOG_FORMAT=json, on a Redis of their own, each writing to a file."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        redis_var = tmp_path / "redis"
        redis_server.ensure_started(redis_var)
        found = redis_server.running(redis_var)
        assert found is not None
        self.redis_var = redis_var
        self.port = free_port()
        self.env = deployment_env(
            settings,
            tmp_path,
            REDIS_URL=redis_server.redis_url(found[1], redis_server.password(redis_var)),
            SECRET_KEY="json-run",
            LOG_FORMAT="json",
            PORT=str(self.port),
            WEB_WORKERS="1",
            WORKER_CONCURRENCY="2",
        )
        self.logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker", "beat")}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.url = f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> None:
        # The Procfile's lines as they are, .venv made absolute; the worker gets a node name of its own
        # (no other test's worker is taken for it), beat logs at INFO (lines to check).
        lines = {name: PROCFILE[name].replace(".venv/bin/", f"{ROOT}/.venv/bin/") for name in self.logs}
        lines["worker"] += f" -n jsonlogs-{SESSION_TAG}@%h"
        lines["beat"] = lines["beat"].replace("--loglevel=WARNING", "--loglevel=INFO")
        for name, line in lines.items():
            with self.logs[name].open("ab") as out:  # O_APPEND: a process's lines never overwrite each other
                self.processes.append(
                    subprocess.Popen(
                        ["sh", "-c", line],
                        cwd=ROOT,
                        env=self.env,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                    )
                )

    def lines(self, name: str) -> list[str]:
        return [line for line in self.logs[name].read_text(errors="replace").splitlines() if line.strip()]

    def records(self, name: str) -> list[dict[str, Any]]:
        """The process's lines, each parsed: any line that is not a JSON object with every key fails the test."""
        records = []
        for number, line in enumerate(self.lines(name), 1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{name} line {number} is not JSON: {line!r}")
            assert isinstance(record, dict), f"{name} line {number}: {line!r}"
            assert set(record) >= KEYS, f"{name} line {number} lacks {KEYS - set(record)}: {line!r}"
            records.append(record)
        return records

    def alive(self) -> None:
        for name, process in zip(self.logs, self.processes, strict=False):
            assert process.poll() is None, f"{name} ended: " + "\n".join(self.lines(name)[-30:])

    def stop(self) -> None:
        for process in self.processes:
            processes.stop(process, timeout=20)
        redis_server.stop(self.redis_var)


@pytest.fixture
def stack(app: Flask, settings: Settings, tmp_path: Path, clean: None) -> Iterator[Stack]:
    running = Stack(settings, tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _answers(stack: Stack) -> bool:
    stack.alive()
    try:
        return requests.get(f"{stack.url}/health", timeout=5).status_code in (200, 503)
    except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading the app
        return False


def _has(records: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(key) == value for key, value in fields.items())]


def test_every_line_is_json_and_one_request_id_finds_the_request_its_run_and_the_promotion(
    app: Flask, stack: Stack
) -> None:
    headers = {"Authorization": f"Bearer {make_token(app, 'json-run')}"}
    wait_for(lambda: _answers(stack), timeout=90, interval=0.2)
    profile = requests.post(f"{stack.url}/profiles", json={"name": "json-run"}, headers=headers, timeout=10)
    assert profile.status_code == 201, profile.text
    batch = {"profile_ids": [profile.json()["id"]], "processor": "sleep", "parameters": {"seconds": 0.3}}
    created = []
    for request_id, name in ((FIRST, "first"), (SECOND, "second")):
        answer = requests.post(
            f"{stack.url}/batches",
            json={**batch, "name": name},
            headers={**headers, "X-Request-ID": request_id},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        assert answer.headers["X-Request-ID"] == request_id
        created.append(answer.json())
    first, second = created
    assert first["status"] == "in_progress"  # it started at once; the second waits behind it

    def finished() -> bool:
        stack.alive()
        states = [requests.get(f"{stack.url}/batches/{b['id']}", headers=headers, timeout=10).json() for b in created]
        return all(state["status"] == "done" for state in states)

    wait_for(finished, timeout=90, interval=0.2)
    # The promotion's line comes from the worker a moment after the second batch started.
    wait_for(lambda: _has(stack.records("worker"), request_id=FIRST, logger="tasks.queue"), timeout=30, interval=0.1)
    stack.stop()  # every line written, the stop's own lines too

    web, worker, beat = (stack.records(name) for name in ("web", "worker", "beat"))
    assert _has(web, logger="gunicorn.error"), "gunicorn's own lines are missing"
    assert beat, "beat wrote nothing"
    access = _has(web, logger="gunicorn.access", request_id=FIRST)
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("POST", "/api/v1/batches", 201)]
    assert isinstance(access[0]["duration_ms"], float) and access[0]["actor"] == "token:json-run"

    run = _has(worker, request_id=FIRST, batch_id=first["id"])
    assert any(r["logger"] == "tasks.batches" and r["message"] == f"batch {first['id']}: run done" for r in run)
    assert any(r["logger"] == "celery.app.trace" and "batches.run" in r["message"] for r in run), run
    assert len({r["task_id"] for r in run}) == 1 and run[0]["task_id"]

    promotion = _has(worker, request_id=FIRST, logger="tasks.queue")
    assert [p["message"] for p in promotion] == [f"queue: promoted batch {second['id']}"]
    assert promotion[0]["task_id"] != run[0]["task_id"]
