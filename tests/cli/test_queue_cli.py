"""`flask queue ...` as subprocesses: the API's rules and shapes, exit 0/1/2, and what the database holds after."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from flask import Flask

from app.config import Settings
from app.embedded.discovery import RunningServer, write_discovery
from app.extensions import db
from tests.cli.conftest import Cli, Stack, actor, query
from tests.conftest import insert_profiles, wait_for

QUEUE_KEYS = [
    "paused",
    "paused_by",
    "paused_at",
    "paused_reason",
    "draining",
    "running",
    "queued_count",
    "start_enabled",
]


def profiles(app: Flask, count: int = 2) -> str:
    with app.app_context():
        ids = insert_profiles(count)
        db.session.remove()
    return ",".join(map(str, ids))


def status_of(app: Flask, batch_id: int) -> str:
    return str(query(app, "SELECT status FROM batches WHERE id = :id", id=batch_id)[0].status)


def queued_ids(app: Flask) -> list[int]:
    return [row.id for row in query(app, "SELECT id FROM batches WHERE status = 'queued' ORDER BY queue_rank")]


def create(cli: Cli, ids: str, name: str, **params: Any) -> dict[str, Any]:
    args = ["batch", "create", "--name", name, "--processor", "sleep", "--profiles", ids, "--json"]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    body: dict[str, Any] = cli(*args).json()
    return body


def test_queue_commands_steer_the_queue_as_the_api_does(app: Flask, cli: Cli, worker: subprocess.Popen[bytes]) -> None:
    ids = profiles(app)
    drained = cli("queue", "drain", "--json").json()  # nothing runs: the queue pauses at once
    assert list(drained) == QUEUE_KEYS
    assert drained["paused"] is True and drained["paused_by"] == actor() and drained["paused_reason"] == "drained"
    first, second, third = (create(cli, ids, f"b{n}", seconds=0) for n in range(3))
    assert [b["queue_position"] for b in (first, second, third)] == [1, 2, 3]
    assert {b["status"] for b in (first, second, third)} == {"queued"}

    status = cli("queue", "status", "--json").json()
    assert list(status) == QUEUE_KEYS
    assert (status["queued_count"], status["running"], status["start_enabled"]) == (3, None, True)
    table = cli("queue", "status")
    assert table.code == 0
    assert "queued         3" in table.out and "yes (drained) by " + actor() in table.out
    rows = [line.split() for line in table.out.splitlines() if line.startswith("#")][1:]
    assert [(row[0], int(row[1])) for row in rows] == [("#1", first["id"]), ("#2", second["id"]), ("#3", third["id"])]

    moved = cli("queue", "move", str(third["id"]), "1", "--json").json()
    assert (moved["id"], moved["queue_position"]) == (third["id"], 1)
    assert queued_ids(app) == [third["id"], first["id"], second["id"]]
    cancelled = cli("queue", "cancel", str(first["id"]), "--json").json()
    assert (cancelled["status"], cancelled["queue_position"]) == ("cancelled", None)
    assert status_of(app, first["id"]) == "cancelled"
    logged = query(app, "SELECT message FROM batch_logs WHERE batch_id = :id ORDER BY id", id=first["id"])
    assert logged[-1].message == f"cancelled by {actor()}"

    # Refusals: the API's 409, 404 and 422 are exit 1 with the message on stderr; usage errors exit 2.
    again, missing, bad, nothing, usage = cli.all(
        ["queue", "cancel", str(first["id"])],
        ["queue", "move", "9999", "1"],
        ["queue", "move", str(second["id"]), "0", "--json"],
        ["queue", "stop"],
        ["queue", "move", str(second["id"]), "first"],
    )
    assert again.code == 1 and "only a queued batch can be cancelled" in again.err and again.out == ""
    assert missing.code == 1 and "batch 9999 does not exist" in missing.err
    assert bad.code == 1
    assert bad.err.strip().startswith('{"error": {"code": "validation_error"')
    assert '"position": ["Must be greater than or equal to 1."]' in bad.err
    assert nothing.code == 1 and "nothing runs" in nothing.err
    assert usage.code == 2 and "Invalid value for 'POSITION'" in usage.err
    assert queued_ids(app) == [third["id"], second["id"]]  # nothing a refusal touched moved

    started = cli("queue", "start", "--json").json()
    assert started["paused"] is False
    wait_for(lambda: status_of(app, second["id"]) == "done", timeout=60, interval=0.1)
    runs = query(app, "SELECT id FROM batches WHERE status = 'done' ORDER BY started_at")
    assert [row.id for row in runs] == [third["id"], second["id"]]  # in the order the move left them


def test_queue_stop_stops_the_running_batch_and_start_is_refused_while_it_runs(
    app: Flask, cli: Cli, worker: subprocess.Popen[bytes]
) -> None:
    ids = profiles(app, 3)
    batch = create(cli, ids, "long", seconds=30)
    wait_for(lambda: status_of(app, batch["id"]) == "in_progress", timeout=60, interval=0.1)

    refused = cli("queue", "start")
    assert refused.code == 1 and f"batch {batch['id']} is running" in refused.err
    draining = cli("queue", "drain", "--json").json()
    assert draining["draining"] is True and draining["running"]["id"] == batch["id"]
    undrained = cli("queue", "start")  # while a batch runs, Start only cancels a drain
    assert undrained.code == 0 and "Drain cancelled." in undrained.out
    assert query(app, "SELECT draining FROM queue_state")[0].draining is False

    stopped = cli("queue", "stop", "--json").json()
    assert stopped["id"] == batch["id"] and stopped["status"] in ("stopping", "stopped")
    wait_for(lambda: status_of(app, batch["id"]) == "stopped", timeout=30, interval=0.1)
    state = query(app, "SELECT paused, paused_by, paused_reason FROM queue_state")[0]
    assert (state.paused, state.paused_by, state.paused_reason) == (True, actor(), "stopped")
    pending = query(
        app, "SELECT count(*) AS n FROM batch_items WHERE batch_id = :id AND status = 'pending'", id=batch["id"]
    )
    assert pending[0].n >= 2  # the items not run stay pending
    shown = cli("queue", "status")
    assert shown.code == 0 and "yes (stopped) by " + actor() in shown.out and "running        nothing" in shown.out


def test_a_command_beside_make_run_finds_the_embedded_servers_by_itself(
    app: Flask, stack: Stack, cli: Cli, tmp_path: Path, settings: Settings
) -> None:
    """No DATABASE_URL, REDIS_URL or SECRET_KEY: the servers come from var/embedded.json, as `make run` writes it."""
    var = tmp_path / "var"
    var.mkdir()
    # The session's PostgreSQL stands in for the embedded one; the test process's pid proves it "alive".
    write_discovery(
        var, RunningServer(os.getpid(), settings.database_url), RunningServer(stack.redis_pid, stack.redis_url)
    )
    env = {key: value for key, value in stack.env.items() if key not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    bare = Cli({**env, "BATCHQ_VAR_DIR": str(var)})
    ids = profiles(app)
    created = bare("batch", "create", "--name", "found", "--processor", "noop", "--profiles", ids, "--json").json()
    assert query(app, "SELECT name FROM batches WHERE id = :id", id=created["id"])[0].name == "found"
    assert bare("batch", "show", str(created["id"]), "--json").json()["name"] == "found"
    assert list(bare("queue", "status", "--json").json()) == QUEUE_KEYS
    assert (var / "secret_key").exists()  # generated and kept, as under `make run`
