"""`flask batches purge`: delete old finished batches from a shell, through the retention service.

`batches` (plural) acts on many batches at once, beside `batch`, which acts on one.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from app.cli_support import echo_json
from app.services import retention
from app.services.retention import PurgeResult

batches_cli = AppGroup("batches", help="Act on many batches at once: purge old finished ones.")

_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_DURATION = re.compile(r"(\d+)([dhm])")


class Duration(click.ParamType):
    """A whole number of days, hours or minutes: `90d`, `12h`, `30m`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        found = _DURATION.fullmatch(str(value).strip().lower())
        if found is None or int(found[1]) == 0:
            self.fail(f"{value!r} is not a duration such as 90d, 12h or 30m", param, ctx)
        return timedelta(**{_UNITS[found[2]]: int(found[1])})


@batches_cli.command("purge")
@click.option(
    "--finished-before",
    "age",
    type=Duration(),
    required=True,
    metavar="AGE",
    help="delete batches that finished longer ago than this: 90d, 12h, 30m",
)
@click.option("--dry-run", is_flag=True, help="count what would be deleted; delete nothing")
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=retention.DEFAULT_CHUNK,
    show_default=True,
    help="batches deleted per transaction",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON object")
def purge(age: timedelta, dry_run: bool, chunk: int, as_json: bool) -> None:
    """Delete finished batches (done, failed, stopped, cancelled) with their items, logs and webhook records.

    In chunks, each its own short transaction, without the queue lock: the queue goes on meanwhile. A batch
    whose completion webhook is still being retried is kept until its delivery ends.
    """
    before = retention.cutoff(age)
    on_chunk = _progress if sys.stderr.isatty() and not dry_run else None
    try:
        result = retention.purge(before, chunk=chunk, dry_run=dry_run, on_chunk=on_chunk)
    except SQLAlchemyError as exc:  # chunks committed before it stay deleted; running it again goes on
        raise click.ClickException(f"the purge stopped: {type(exc).__name__}; run it again to go on") from exc
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(summary(result))


def _progress(total: PurgeResult) -> None:
    click.echo(
        f"chunk {total.chunks}: {total.batches:,} batches, {total.items:,} items, {total.logs:,} log lines"
        f" ({total.seconds:.1f} s)",
        err=True,
    )


def summary(result: PurgeResult) -> str:
    """One line for people: what went (or would go), finished before when, in how many chunks."""
    before = result.before.isoformat(timespec="seconds") if result.before else "-"
    rows = (
        f"{result.batches:,} batches finished before {before}: {result.items:,} items, {result.logs:,} log lines,"
        f" {result.webhook_attempts:,} webhook attempts"
    )
    if result.dry_run:
        return f"would delete {rows}, in {result.chunks:,} chunks"
    return f"deleted {rows}, in {result.chunks:,} chunks, {result.seconds:.1f} s"
