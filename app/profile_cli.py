"""`flask profiles import FILE`: the bulk import of POST /profiles/import from a shell, all or nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup

from app.cli_support import echo_json, json_option, run_service
from app.services import profile_import

profiles_cli = AppGroup("profiles", help="Import profiles.")

# A file's format by its extension, when --format doesn't say.
FORMATS_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl"}


class Progress:
    """How far an import got, on stderr (stdout keeps the answer): a bar on a terminal, plain lines elsewhere."""

    def __init__(self) -> None:
        self.terminal = sys.stderr.isatty()
        self.bar: Any = None
        self.shown = 0

    def __call__(self, written: int, total: int) -> None:
        if not self.terminal:
            message = f"{total} profiles valid; writing" if written == 0 else f"written {written}/{total}"
            click.echo(message, err=True)
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="importing", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(written - self.shown)
        self.shown = written

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@profiles_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "kind", type=click.Choice(profile_import.FORMATS), help="csv or jsonl; default: by the extension"
)
@json_option
def import_profiles(file: Path, kind: str | None, as_json: bool) -> None:
    """Create or update profiles by name from a CSV (name,tags,<attributes>) or JSON Lines file.

    The file is checked whole first: a bad line is named (exit 1) and nothing is imported.
    """
    kind = kind or FORMATS_BY_SUFFIX.get(file.suffix.lower())
    if kind is None:
        raise click.UsageError(f"can't tell the format of {file.name!r} by its extension; give --format csv|jsonl")
    progress = Progress()
    try:
        created, updated = run_service(lambda: profile_import.import_file(file.read_bytes(), kind, progress), as_json)
    finally:
        progress.close()
    if as_json:
        echo_json({"created": created, "updated": updated})
    else:
        click.echo(f"Imported {file.name}: {created} created, {updated} updated.")
