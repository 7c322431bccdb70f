"""`flask batch create|show|logs` as subprocesses: POST /batches' checks, the API's shapes, a log followed live."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from typing import Any

from flask import Flask

from app.extensions import db
from tests.cli.conftest import Cli, actor, query
from tests.cli.test_queue_cli import profiles, status_of
from tests.conftest import ApiClient, wait_for


def tag_profiles(app: Flask, tag: str, names: list[str]) -> list[int]:
    with app.app_context():
        ids = [
            db.session.execute(
                db.text(
                    "INSERT INTO profiles (name, attributes, tags, created_at)"
                    " VALUES (:name, '{}', ARRAY[:tag], now()) RETURNING id"
                ),
                {"name": name, "tag": tag},
            ).scalar_one()
            for name in names
        ]
        db.session.commit()
        db.session.remove()
    return ids


def batch_count(app: Flask) -> int:
    return int(query(app, "SELECT count(*) AS n FROM batches")[0].n)


def test_batch_create_checks_the_body_with_the_api_schema_and_names_the_field(app: Flask, cli: Cli) -> None:
    ids = profiles(app)
    create = ["batch", "create", "--name", "n"]
    bad, unknown, untagged, too_long, usage = cli.all(
        ["batch", "create", "--name", "", "--processor", "sleep", "--profiles", f"{ids},x", "--param", "seconds=-1"],
        [*create, "--processor", "nope", "--profiles", ids, "--json"],
        [*create, "--processor", "noop", "--tag", "nobody"],
        [*create, "--processor", "noop", "--profiles", ids, "--item-timeout", "0"],
        [*create, "--processor", "noop", "--profiles", ids, "--param", "seconds"],
    )
    assert bad.code == 1 and bad.out == ""
    assert "the request is not valid" in bad.err
    assert "  name: Length must be between 1 and 200." in bad.err
    assert "  profile_ids.2: Not a valid integer." in bad.err
    assert "  parameters.seconds: Must be greater than or equal to 0" in bad.err
    assert unknown.code == 1
    error = json.loads(unknown.err)["error"]
    assert error["code"] == "validation_error" and "unknown processor 'nope'" in error["fields"]["processor"][0]
    assert untagged.code == 1 and "profile_tags: no profile is tagged nobody" in untagged.err
    assert too_long.code == 1 and "item_timeout" in too_long.err
    assert usage.code == 2 and "is not KEY=VALUE" in usage.err
    assert batch_count(app) == 0  # a refusal stores nothing

    assert cli("queue", "drain").code == 0  # paused: the batch stays queued, nothing sends it anywhere
    tagged = tag_profiles(app, "night", ["t-1", "t-2"])
    created = cli(
        "batch", "create", "--name", "hooks", "--processor", "http", "--profiles", ids, "--tag", "night",
        "--param", "url=http://127.0.0.1:9/hook", "--param", "timeout=1.5", "--item-timeout", "30", "--json",
    ).json()  # fmt: skip
    assert created["status"] == "queued" and created["queue_position"] == 1
    # Values are JSON when they parse (1.5), else the text itself (the URL).
    assert created["parameters"] == {"url": "http://127.0.0.1:9/hook", "timeout": 1.5}
    assert created["profile_ids"] == [*map(int, ids.split(",")), *tagged]
    assert created["item_timeout"] == 30
    row = query(app, "SELECT created_by, processor FROM batches WHERE id = :id", id=created["id"])[0]
    assert (row.created_by, row.processor) == (actor(), "http")


def test_batch_show_prints_what_the_api_answers(app: Flask, cli: Cli, api: ApiClient) -> None:
    ids = profiles(app)
    assert cli("queue", "drain").code == 0
    created = cli("batch", "create", "--name", "shown", "--processor", "noop", "--profiles", ids, "--json").json()
    shown = cli("batch", "show", str(created["id"]), "--json").json()
    assert shown == api.batch_of(created["id"])
    assert shown["waiting_reason"]  # paused, or no worker: a sentence either way
    table = cli("batch", "show", str(created["id"]))
    assert table.code == 0
    assert "status        queued" in table.out and "position      #1" in table.out
    assert f"waiting       {shown['waiting_reason']}" in table.out
    missing = cli("batch", "show", "9999")
    assert missing.code == 1 and "batch 9999 does not exist" in missing.err


def test_batch_logs_follow_prints_each_line_once_as_it_comes_and_ends_with_the_batch(
    app: Flask, cli: Cli, worker: subprocess.Popen[bytes]
) -> None:
    ids = profiles(app, 3)
    assert cli("queue", "drain").code == 0
    args = ["batch", "create", "--name", "followed", "--processor", "sleep", "--profiles", ids]
    batch = cli(*args, "--param", "seconds=1.5", "--param", 'fail_profiles=["p-2"]', "--json").json()

    follower = cli.popen("batch", "logs", str(batch["id"]), "--follow", "--json", stdout=subprocess.PIPE)
    received: list[tuple[dict[str, Any], str]] = []  # each line, and the batch's status when it arrived

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            received.append((json.loads(line), status_of(app, batch["id"])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: received, timeout=60, interval=0.05)  # the creation line, before anything runs
        assert cli("queue", "start").code == 0
        # Lines arrive while the batch still runs: each item's, not only what a last read would find.
        wait_for(lambda: len(received) >= 4, timeout=60, interval=0.05)
        assert "in_progress" in [status for _, status in received]
        assert follower.wait(timeout=60) == 0  # it ends by itself once the batch has ended
        reader.join(timeout=10)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert status_of(app, batch["id"]) == "failed"
    logged = query(app, "SELECT id, level, message FROM batch_logs WHERE batch_id = :id ORDER BY id", id=batch["id"])
    lines = [line for line, _ in received]
    assert [line["id"] for line in lines] == [row.id for row in logged]  # every line, once, in order
    assert [line["message"] for line in lines] == [row.message for row in logged]
    assert set(lines[0]) == {"id", "at", "level", "message"}  # the API's log object

    plain = cli("batch", "logs", str(batch["id"]))
    assert plain.code == 0
    assert [line.split(" ", 2)[2] for line in plain.out.splitlines()] == [row.message for row in logged]
    warnings = cli("batch", "logs", str(batch["id"]), "--level", "warning")
    assert warnings.code == 0
    expected = [row.message for row in logged if row.level in ("warning", "error")]
    assert expected and [line.split(" ", 2)[2] for line in warnings.out.splitlines()] == expected
    assert cli("batch", "logs", "9999").code == 1
    assert cli("batch", "logs", str(batch["id"]), "--level", "loud").code == 2


def test_batch_logs_follow_ends_quietly_on_ctrl_c(app: Flask, cli: Cli) -> None:
    ids = profiles(app)
    assert cli("queue", "drain").code == 0
    batch = cli("batch", "create", "--name", "idle", "--processor", "noop", "--profiles", ids, "--json").json()
    follower = cli.popen("batch", "logs", str(batch["id"]), "-f", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        assert "created by" in follower.stdout.readline()  # following: the batch waits, paused
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 130
        assert follower.stderr is not None and "Traceback" not in follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()


def test_batch_logs_into_a_pipe_closed_early_ends_quietly(app: Flask, cli: Cli) -> None:
    """`batch logs ID | head`: once the reader has gone, the command stops with exit 0 and no traceback."""
    ids = profiles(app)
    assert cli("queue", "drain").code == 0
    batch = cli("batch", "create", "--name", "long log", "--processor", "noop", "--profiles", ids, "--json").json()
    with app.app_context():
        db.session.execute(
            db.text(
                "INSERT INTO batch_logs (batch_id, at, level, message)"
                " SELECT :id, now(), 'info', 'line ' || g FROM generate_series(1, 20000) g"
            ),
            {"id": batch["id"]},
        )
        db.session.commit()
        db.session.remove()
    reader = cli.popen("batch", "logs", str(batch["id"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert "created by" in reader.stdout.readline()
    reader.stdout.close()  # as `head -1` does
    assert reader.wait(timeout=60) == 0
    assert reader.stderr.read() == ""
