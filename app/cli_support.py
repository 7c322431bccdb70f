"""What every `flask` command shares: who acts, refusals as exit 1, tables for people and JSON for scripts.

The commands call the same services as the API, so a refusal is the same
AppError (or marshmallow ValidationError) the API turns into its 404/409/422.
Here it becomes exit 1 with the message on stderr (click's usage errors keep
exit 2), and with `--json` the API's error body, so a script reads one shape.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import IO, Any, TypeVar

import click
from marshmallow import ValidationError

from app.errors import AppError

T = TypeVar("T")

# The --json flag every command that prints something shares.
json_option = click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of a table")


def actor() -> str:
    """Who a command acts as, recorded in logs and `paused_by` as the API records `token:NAME`."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        name = f"uid{os.getuid()}"
    return f"cli:{name}"


class Refused(click.ClickException):
    """A service's refusal: exit 1, the message (and each field's) on stderr, or the API's error body as JSON."""

    exit_code = 1

    def __init__(self, code: str, message: str, fields: Mapping[str, Any] | None, as_json: bool) -> None:
        super().__init__(message)
        self.code = code
        self.fields = dict(fields) if fields else None
        self.as_json = as_json

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            body: dict[str, Any] = {"code": self.code, "message": self.message}
            if self.fields:
                body["fields"] = self.fields
            click.echo(json.dumps({"error": body}), err=True)
            return
        click.echo(f"Error: {self.message}", err=True)
        for field, text in field_messages(self.fields or {}):
            click.echo(f"  {field}: {text}", err=True)


def field_messages(fields: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Flatten marshmallow's nested messages into (dotted field, message) pairs."""
    for key, value in fields.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from field_messages(value, name)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    yield from field_messages(item, name)
                else:
                    yield name, str(item)
        else:
            yield name, str(value)


def run_service(action: Callable[[], T], as_json: bool = False) -> T:
    """Run a service call; its refusal (the API's 404/409/422) ends the command with exit 1."""
    try:
        return action()
    except AppError as exc:
        raise Refused(exc.code, exc.message, exc.fields, as_json) from exc
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        fields = ", ".join(dict.fromkeys(name for name, _ in field_messages(messages)))
        raise Refused("validation_error", f"the request is not valid ({fields})", messages, as_json) from exc


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as aligned columns, `-` for a missing value."""
    shown = [[str(row[column] if row[column] is not None else "-") for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in shown)) for i, column in enumerate(columns)]
    for line in [columns, *shown]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def pairs(rows: list[tuple[str, Any]]) -> None:
    """Print one record as `label  value` lines."""
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label.ljust(width)}  {value if value is not None else '-'}")
