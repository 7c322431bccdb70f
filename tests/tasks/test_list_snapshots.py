"""One snapshot per answer: lists raced by moves, cancels, creations and promotions always show the queue whole."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from flask import Flask

from tests.conftest import ApiClient, queue_violations, wait_for

RACE_SECONDS = 4.0


def _problems(body: dict[str, Any], only_queued: bool) -> list[str]:
    """What is wrong with one list answer: positions must be 0 for one running batch, then 1..n in order."""
    items = body["items"]
    running = [b for b in items if b["status"] in ("in_progress", "stopping")]
    queued = [b for b in items if b["status"] == "queued"]
    problems = []
    if len(running) > 1 or any(b["queue_position"] != 0 for b in running):
        problems.append(f"running: {[(b['id'], b['queue_position']) for b in running]}")
    if [b["queue_position"] for b in queued] != list(range(1, len(queued) + 1)):
        problems.append(f"queued positions {[b['queue_position'] for b in queued]}")
    if not only_queued and items[: len(running)] != running:
        problems.append("the running batch is not listed first")
    if any(b["waiting_code"] is None for b in queued):
        problems.append("a queued batch without a waiting reason")
    return problems


def test_lists_raced_by_moves_cancels_creations_and_promotions_always_show_positions_one_to_n(
    api: ApiClient, app: Flask, celery_worker: Any, settled: None
) -> None:
    profile_ids = api.profiles(1)
    for _ in range(12):
        api.batch(profile_ids, "sleep", seconds=0.05)
    stop = threading.Event()
    problems: list[str] = []
    answers = [0]

    def read(path: str, only_queued: bool) -> None:
        client = ApiClient(app.test_client(), api.headers["Authorization"].split()[1])
        while not stop.is_set():
            body = client.get(path).get_json()
            answers[0] += 1
            problems.extend(_problems(body, only_queued))

    def steer() -> None:
        client = ApiClient(app.test_client(), api.headers["Authorization"].split()[1])
        chance = random.Random(7)
        while not stop.is_set():
            queued = client.queued_order()
            action = chance.random()
            if action < 0.35:
                client.batch(profile_ids, "sleep", seconds=0.05)
            elif queued and action < 0.8:
                client.post(f"/batches/{chance.choice(queued)}/move", {"position": chance.randint(1, len(queued))})
            elif queued:
                client.post(f"/batches/{chance.choice(queued)}/cancel")

    threads = [
        threading.Thread(target=read, args=("/batches?per_page=500", False)),
        threading.Thread(target=read, args=("/batches?status=queued&per_page=500", True)),
        threading.Thread(target=steer),
        threading.Thread(target=steer),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(RACE_SECONDS)  # the length of the race, not a synchronization
        # However slow the machine, the race goes on until the readers have had their answers.
        wait_for(lambda: answers[0] > 20, timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    with app.app_context():
        assert queue_violations() == []
    wait_for(lambda: api.get("/queue").get_json()["queued_count"] == 0, timeout=60)
