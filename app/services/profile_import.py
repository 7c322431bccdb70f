"""Bulk import of profiles from CSV or JSON Lines: all or nothing, idempotent by name.

The whole file is parsed and validated first, line by line, with errors that
name the line (counted in the file: a CSV header is line 1, a quoted cell may
span lines) and the field. Only a file without errors is written, in one
transaction of INSERT ... ON CONFLICT (name) DO UPDATE statements, so two
imports of the same file at once both succeed: the second waits on the first's
new rows and updates them, and created + updated always counts the file's
profiles.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import literal_column
from sqlalchemy.dialects.postgresql import insert

from app.errors import InvalidInput
from app.extensions import db
from app.models import Profile
from app.models._types import utcnow
from app.schemas.profiles import ProfileCreate
from app.services.profiles import live

FORMATS = ("csv", "jsonl")
# Lines named in an error's fields; the message gives the total.
SHOWN_ERRORS = 20
# Rows per INSERT statement (three parameters each, well under PostgreSQL's 65535).
CHUNK = 2000
TAG_SEPARATORS = re.compile(r"[\s,;]+")
# Told (profiles written so far, profiles in the file) as an import goes.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Line:
    """One profile read from a file, with the line it starts on."""

    number: int
    data: dict[str, Any]


class ImportErrors(InvalidInput):
    """A file with bad lines: nothing was imported."""

    def __init__(self, errors: dict[int, dict[str, Any]]) -> None:
        first = min(errors)
        detail = describe(errors[first])
        more = f" ({len(errors)} bad lines in all)" if len(errors) > 1 else ""
        shown = sorted(errors)[:SHOWN_ERRORS]
        super().__init__(
            f"line {first}: {detail}{more}; nothing was imported", {"lines": {str(n): errors[n] for n in shown}}
        )
        self.errors = errors


def describe(fields: dict[str, Any]) -> str:
    """One line's errors as a sentence: `field: message` for each field (`_line`, `_header`: the message alone)."""
    return "; ".join(
        " ".join(_texts(messages)) if field.startswith("_") else f"{field}: {' '.join(_texts(messages))}"
        for field, messages in fields.items()
    )


def _texts(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [f"{key}: {text}" for key, value in messages.items() for text in _texts(value)]
    if isinstance(messages, list):
        return [text for value in messages for text in _texts(value)]
    return [str(messages)]


def import_file(content: bytes, kind: str, progress: Progress | None = None) -> tuple[int, int]:
    """Validate a whole file and import it in one transaction; return (created, updated).

    `progress(written, total)` hears of each chunk written (first with 0, once the file is valid): the
    CLI's progress bar. Nothing is committed until the last chunk is written.
    """
    lines, errors = read_lines(decode(content), kind)
    return upsert(validated(lines, errors), progress)


def decode(content: bytes) -> str:
    """The file as text (UTF-8, a BOM allowed), refusing bytes PostgreSQL can't store."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportErrors({content.count(b"\n", 0, exc.start) + 1: {"_line": ["not valid UTF-8"]}}) from None
    if "\x00" in text:
        raise ImportErrors({text.count("\n", 0, text.index("\x00")) + 1: {"_line": ["contains a NUL character"]}})
    return text


def read_lines(text: str, kind: str) -> tuple[list[Line], dict[int, dict[str, Any]]]:
    """Split a file into one raw profile per line (CSV record or JSON Lines line), and the lines that aren't one."""
    return _csv_lines(text) if kind == "csv" else _json_lines(text)


def _json_lines(text: str) -> tuple[list[Line], dict[int, dict[str, Any]]]:
    lines, errors = [], {}
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            errors[number] = {"_line": [f"not valid JSON: {exc}"[:300]]}
            continue
        if not isinstance(value, dict):
            errors[number] = {"_line": ["expected a JSON object"]}
            continue
        lines.append(Line(number, value))
    return lines, errors


def _csv_lines(text: str) -> tuple[list[Line], dict[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [cell.strip() for cell in next(reader, [])]
        columns = _columns(header)
        lines, errors, start = [], {}, reader.line_num + 1
        for record in reader:
            number, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(columns):
                errors[number] = {"_line": [f"has {len(record)} cells; the header has {len(columns)}"]}
                continue
            lines.append(Line(number, _csv_profile(columns, record)))
    except csv.Error as exc:
        raise ImportErrors({reader.line_num or 1: {"_line": [f"not valid CSV: {exc}"]}}) from None
    return lines, errors


def _columns(header: list[str]) -> list[str]:
    """Check a CSV header: `name`, optionally `tags`, then attribute columns."""
    problem = None
    if "name" not in header:
        problem = "the header must have a name column (name,tags,<attribute columns>)"
    elif any(not column for column in header):
        problem = "a header cell is empty"
    elif len(set(header)) != len(header):
        problem = "a column is named twice"
    if problem:
        raise ImportErrors({1: {"_header": [problem]}})
    return header


def _csv_profile(columns: list[str], record: list[str]) -> dict[str, Any]:
    """One CSV record as a profile body: tags split on spaces, commas or semicolons; empty cells left out."""
    cells = dict(zip(columns, record, strict=True))
    data: dict[str, Any] = {"name": cells.pop("name").strip()}
    data["tags"] = [tag for tag in TAG_SEPARATORS.split(cells.pop("tags", "")) if tag]
    data["attributes"] = {column: value for column, value in cells.items() if value != ""}
    return data


def validated(lines: list[Line], errors: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every line through the API's profile schema; names must not repeat within the file.

    Raises with these errors and those of the lines `errors` already names (which the file couldn't parse).
    """
    schema = ProfileCreate()
    rows, seen = [], dict[str, int]()
    for line in lines:
        try:
            row = schema.load(line.data)
        except ValidationError as exc:
            errors[line.number] = exc.messages if isinstance(exc.messages, dict) else {"_line": exc.messages}
            continue
        if row["name"] in seen:
            errors[line.number] = {"name": [f"{row['name']!r} is also on line {seen[row['name']]}"]}
            continue
        seen[row["name"]] = line.number
        rows.append(row)
    if errors:
        raise ImportErrors(errors)
    return rows


def upsert(rows: list[dict[str, Any]], progress: Progress | None = None) -> tuple[int, int]:
    """Insert or update the profiles by name in one transaction; return (created, updated).

    Rows go in name order, so two imports that share names lock them in the
    same order and wait for each other instead of deadlocking.
    """
    created = 0
    now = utcnow()
    ordered = sorted(rows, key=lambda row: row["name"])
    if progress is not None:
        progress(0, len(ordered))
    try:
        for start in range(0, len(ordered), CHUNK):
            values = [{**row, "created_at": now} for row in ordered[start : start + CHUNK]]
            new = insert(Profile).values(values)
            upserted: Any = new.on_conflict_do_update(
                index_elements=[Profile.name],
                index_where=live(),
                set_={"attributes": new.excluded.attributes, "tags": new.excluded.tags},
            ).returning(literal_column("xmax = 0"))  # true for a row this statement inserted
            created += sum(1 for inserted in db.session.scalars(upserted) if inserted)
            if progress is not None:
                progress(min(start + CHUNK, len(ordered)), len(ordered))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return created, len(ordered) - created
