"""The table's query string: its filters and page, read through a schema, and written back into links.

The same query string serves the page, its live fragment and the `next` of
every row control, so a filtered table stays filtered however it is refreshed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from marshmallow import EXCLUDE, ValidationError
from werkzeug.datastructures import MultiDict

from app.schemas.batches import TableFilterArgs
from app.schemas.common import query_data
from app.services.batches import BatchFilter

# How the filter form names each query parameter, for its error lines.
LABELS = {
    "q": "Name",
    "status": "Status",
    "processor": "Processor",
    "created_by": "Created by",
    "from": "Created from",
    "to": "to",
    "page": "Page",
}


@dataclass
class TableQuery:
    """The valid part of a table query, and what was wrong with the rest (shown beside the filters)."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def page(self) -> int:
        return int(self.values.get("page", 1))

    @property
    def statuses(self) -> list[str]:
        return list(self.values.get("status", []))

    @property
    def filtered(self) -> bool:
        return any(key != "page" for key in self.values)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def error_lines(self) -> list[tuple[str, str]]:
        """(parameter, sentence) for each filter left out."""
        return [(key, f"{LABELS.get(key, key)}: {' '.join(messages)}") for key, messages in self.errors.items()]

    def filters(self) -> BatchFilter:
        """The filter the service applies: `to` includes its whole (UTC) day."""
        first: date | None = self.values.get("created_from")
        last: date | None = self.values.get("created_to")
        return BatchFilter(
            q=self.values.get("q") or None,
            statuses=tuple(self.statuses),
            processor=self.values.get("processor") or None,
            created_by=self.values.get("created_by") or None,
            created_after=_midnight(first) if first else None,
            created_before=_midnight(last + timedelta(days=1)) if last else None,
        )

    def url_args(self, page: int | None = None) -> dict[str, Any]:
        """The query string of this table (on another page if asked), without what was invalid."""
        names = {"created_from": "from", "created_to": "to"}
        args = {names.get(key, key): value for key, value in self.values.items() if key != "page"}
        for key in ("from", "to"):
            if key in args:
                args[key] = args[key].isoformat()
        page = self.page if page is None else page
        if page > 1:
            args["page"] = page
        return args


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def read_table_query(args: MultiDict[str, str]) -> TableQuery:
    """Read the table's query string; an invalid filter is left out and reported, never half-applied."""
    schema = TableFilterArgs()
    # An empty field of the GET form means "any": not a value to validate.
    data = {key: value for key, value in query_data(schema, args).items() if value not in ("", [])}
    try:
        values = schema.load(data, unknown=EXCLUDE)
        return TableQuery(values=values)
    except ValidationError as exc:
        errors = exc.normalized_messages()
        bad = {name for name, spec in schema.fields.items() if (spec.data_key or name) in errors}
        valid = exc.valid_data if isinstance(exc.valid_data, dict) else {}
        values = {key: value for key, value in valid.items() if key not in bad}
        return TableQuery(values=values, errors={key: _flat(value) for key, value in errors.items()})


def _flat(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [text for value in messages.values() for text in _flat(value)]
    if isinstance(messages, list):
        return [text for value in messages for text in _flat(value)]
    return [str(messages)]
