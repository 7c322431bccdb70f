"""`flask batch create|show|logs`: a batch from a shell, through POST /batches' own schema and services."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask.cli import AppGroup

from app.api.bodies import refuse_nul
from app.cli import batch_json, batch_line
from app.cli_support import actor, echo_json, json_option, pairs, run_service
from app.models import BatchStatus
from app.models.batches import LOG_LEVELS
from app.schemas.batches import BatchCreate
from app.services import batches, logs
from app.services.snapshots import read_snapshot

batch_cli = AppGroup("batch", help="Create batches and read them.")

# Lines read per query while printing a log.
LOG_PAGE = 500
# How often --follow looks for new lines: a log line is on screen within this, as the pages' fallback polls.
FOLLOW_EVERY = 0.25
TERMINAL = {BatchStatus.DONE, BatchStatus.FAILED, BatchStatus.STOPPED, BatchStatus.CANCELLED}


def parameter(text: str) -> tuple[str, Any]:
    """`k=v`: the value as JSON when it parses (`seconds=2`, `names=["a"]`), else as the text itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--param")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def profile_ids(text: str | None) -> list[Any]:
    """`1,2,3` as ids; a word that isn't a number is passed on for the schema to refuse by its field."""
    if not text:
        return []
    words = [word.strip() for word in text.split(",") if word.strip()]
    return [int(word) if word.lstrip("-").isdigit() else word for word in words]


@batch_cli.command("create")
@click.option("--name", required=True, help="the batch's name (1..200 characters)")
@click.option("--processor", required=True, help="noop, sleep, http or a registered one")
@click.option("--profiles", "profiles", metavar="1,2,3", help="profile ids, comma-separated")
@click.option("--tag", "tags", multiple=True, help="every profile with this tag (repeatable; adds to --profiles)")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="a processor parameter (repeatable)")
@click.option("--item-timeout", type=float, metavar="SECONDS", help="seconds each item may run (1..86400)")
@json_option
def create(
    name: str,
    processor: str,
    profiles: str | None,
    tags: tuple[str, ...],
    params: tuple[str, ...],
    item_timeout: float | None,
    as_json: bool,
) -> None:
    """Queue a batch, as POST /batches: the same checks, refusals name the field (exit 1)."""
    body: dict[str, Any] = {
        "name": name,
        "processor": processor,
        "profile_ids": profile_ids(profiles),
        "parameters": dict(parameter(text) for text in params),
    }
    if tags:
        body["profile_tags"] = list(tags)
    if item_timeout is not None:
        body["item_timeout"] = item_timeout

    def create_it() -> Any:
        refuse_nul(body)
        batch, _ = batches.create_batch(BatchCreate().load(body), actor())
        read_snapshot()  # its position and waiting reason as they are now, as GET /batches/<id> would say
        return batches.get_batch(batch.id)

    batch = run_service(create_it, as_json)
    if as_json:
        echo_json(batch_json(batch))
        return
    where = f"#{batch.queue_position}" if batch.status == BatchStatus.QUEUED else batch.status
    click.echo(f"Created batch {batch.id} {batch.name!r} with {batch.total_items} profiles: {where}.")


@batch_cli.command("show")
@click.argument("batch_id", metavar="ID", type=int)
@json_option
def show(batch_id: int, as_json: bool) -> None:
    """One batch, as GET /batches/<id>."""
    read_snapshot()
    batch = run_service(lambda: batches.get_batch(batch_id), as_json)
    body = batch_json(batch)
    if as_json:
        echo_json(body)
        return
    progress = body["progress"]
    pairs(
        [
            ("batch", batch_line(batch)),
            ("status", body["status"]),
            ("position", f"#{body['queue_position']}" if body["queue_position"] else body["queue_position"]),
            ("processor", body["processor"]),
            ("parameters", json.dumps(body["parameters"])),
            ("profiles", len(body["profile_ids"])),
            (
                "progress",
                f"{progress['succeeded']} succeeded, {progress['failed']} failed, {progress['pending']} pending"
                f" of {progress['total']}",
            ),
            ("item_timeout", f"{body['item_timeout']:g} s"),
            ("created", f"{body['created_at']} by {batch.created_by or '-'}"),
            ("started", body["started_at"]),
            ("finished", body["finished_at"]),
            ("error", body["error"]),
            ("waiting", body["waiting_reason"]),
            ("starts", body["estimated_start_at"]),
            ("retry_of", body["retry_of"]),
        ]
    )


@batch_cli.command("logs")
@click.argument("batch_id", metavar="ID", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until the batch ends (or Ctrl-C)")
@click.option("--level", type=click.Choice(LOG_LEVELS), help="that level and above")
@json_option
def show_logs(batch_id: int, follow: bool, level: str | None, as_json: bool) -> None:
    """A batch's log, oldest first (`at level message`, or the API's objects as JSON Lines)."""
    read_snapshot()
    run_service(lambda: batches.get_batch(batch_id), as_json)
    render = logs.json_line if as_json else logs.text_line
    try:
        with _ctrl_c_as_event() as interrupted:
            _print_log(batch_id, level, follow, render, interrupted)
        if interrupted.is_set():  # Ctrl-C ends a follow quietly, with the shell's usual 130, as `tail -f` does
            raise click.exceptions.Exit(130)
    except BrokenPipeError:  # `| head` has read enough: end quietly, as `cat` does
        # Point stdout at /dev/null, or the interpreter's last flush would report the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(0) from None


@contextmanager
def _ctrl_c_as_event() -> Iterator[threading.Event]:
    """Ctrl-C sets an event the loop looks at between queries, instead of raising wherever it lands.

    A KeyboardInterrupt raised inside the database driver or a pool's lock can leave that lock held,
    and the exit then waits on it for ever; the loop ends at its next look (at once while it sleeps).
    """
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_log(
    batch_id: int, level: str | None, follow: bool, render: Callable[[Any], str], interrupted: threading.Event
) -> None:
    after = 0
    while not interrupted.is_set():
        read_snapshot()
        # The status first, then the lines, in one snapshot: once it is terminal, this snapshot holds every
        # line written up to its end, so the lines printed next are the last.
        ended = not follow or batches.get_batch(batch_id).status in TERMINAL
        while True:
            page = logs.read_page(batch_id, logs.Window(level=level, after=after), 0, LOG_PAGE)
            if page:
                # Ids grow in commit order (migration 0005), so `after` the last printed skips none, repeats none.
                click.echo("".join(render(line) for line in page), nl=False)
                after = page[-1].id
            if len(page) < LOG_PAGE or interrupted.is_set():
                break
        if ended:
            return
        sys.stdout.flush()
        interrupted.wait(FOLLOW_EVERY)
