"""`flask batches purge` as a subprocess: a dry run, the purge, --json, and usage errors (exit 2)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from flask import Flask

from tests.cli.conftest import Cli
from tests.services.test_retention import batch_ids, count, delivery, seed_finished


def test_purge_dry_run_counts_then_purge_deletes_and_prints_a_summary(app: Flask, cli: Cli) -> None:
    old = [seed_finished(app, age=timedelta(days=91), items=2, logs=3) for _ in range(3)]
    young = seed_finished(app, age=timedelta(days=89))
    retried = seed_finished(app, age=timedelta(days=200))
    delivery(app, retried, "pending")

    dry = cli("batches", "purge", "--finished-before", "90d", "--dry-run", "--chunk", "2")
    assert dry.code == 0, dry.err
    assert dry.out.startswith("would delete 3 batches finished before ")
    assert "6 items, 9 log lines" in dry.out and "in 2 chunks" in dry.out
    assert batch_ids(app) == {*old, young, retried}

    done = cli("batches", "purge", "--finished-before", "90d", "--chunk", "2")
    assert done.code == 0, done.err
    assert done.out.startswith("deleted 3 batches finished before ") and "in 2 chunks" in done.out
    assert len(done.out.strip().splitlines()) == 1
    assert done.err == ""  # progress lines only on a terminal
    assert batch_ids(app) == {young, retried}
    assert count(app, "SELECT count(*) FROM batch_items") == 4  # the two kept batches'


def test_purge_json_prints_one_object_with_the_counts(app: Flask, cli: Cli) -> None:
    seed_finished(app, age=timedelta(hours=13), items=1, logs=2)
    seed_finished(app, age=timedelta(hours=11))
    body = cli("batches", "purge", "--finished-before", "12h", "--json").json()
    assert {key: body[key] for key in ("batches", "items", "logs", "chunks", "dry_run", "more")} == {
        "batches": 1,
        "items": 1,
        "logs": 2,
        "chunks": 1,
        "dry_run": False,
        "more": False,
    }
    assert body["before"] and isinstance(body["seconds"], float)
    assert cli("batches", "purge", "--finished-before", "30m", "--json", "--dry-run").json()["batches"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--finished-before", "90"], "'90' is not a duration such as 90d, 12h or 30m"),
        (["--finished-before", "3w"], "not a duration"),
        (["--finished-before", "0d"], "not a duration"),
        (["--finished-before", "90d", "--chunk", "0"], "--chunk"),
        ([], "--finished-before"),
    ],
)
def test_purge_usage_errors_exit_2_with_the_message_on_stderr(
    app: Flask, cli: Cli, args: list[str], message: str
) -> None:
    kept = seed_finished(app, age=timedelta(days=3650))
    done = cli("batches", "purge", *args)
    assert done.code == 2, (done.out, done.err)
    assert message in done.err and done.out == ""
    assert batch_ids(app) == {kept}
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.err)
