"""Batch bodies and responses, and the processor-specific parameter check."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from app import processors
from app.models import BatchStatus, ItemStatus
from app.models.batches import LOG_LEVELS
from app.processors.base import ITEM_TIMEOUT_MAX, ITEM_TIMEOUT_MIN
from app.processors.builtin import Number
from app.schemas.common import MAX_PAGE, PageArgs
from app.schemas.profiles import Tag
from app.services.outbound import AllowList
from app.services.waiting import WaitingCode, waiting_of

MAX_PROFILES = 10_000
# The length of the column that keeps a callback_url.
MAX_CALLBACK_URL = 2000
# Log line ids are PostgreSQL bigints.
MAX_LOG_ID = 2**63 - 1


def callback_hosts() -> AllowList:
    """Hosts, addresses and CIDRs completion webhooks may call (CALLBACK_ALLOWED_HOSTS)."""
    return AllowList.parse(current_app.config.get("CALLBACK_ALLOWED_HOSTS", ()))


class BatchCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    # Either or both: the batch gets the union, resolved when it is created (app/services/batches.py).
    profile_ids = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1)),
        load_default=list,
        validate=validate.Length(max=MAX_PROFILES),
        metadata={"uniqueItems": True},
    )
    profile_tags = fields.List(Tag(), validate=validate.Length(max=100))
    processor = fields.String(required=True)
    parameters = fields.Dict(keys=fields.String(), load_default=dict)
    # Absent: the processor's own limit, else ITEM_TIMEOUT_DEFAULT (app/services/batches.py).
    item_timeout = Number(allow_nan=False, validate=validate.Range(min=ITEM_TIMEOUT_MIN, max=ITEM_TIMEOUT_MAX))
    # POSTed the batch when it ends, signed with the submitting token's webhook secret (docs/webhooks.md).
    callback_url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        allow_none=True,
        validate=validate.Length(max=MAX_CALLBACK_URL),
        metadata={"description": "receives the batch when it ends; its host must be in CALLBACK_ALLOWED_HOSTS"},
    )

    @validates("callback_url")
    def callback_host_is_allowed(self, value: str | None, **_: Any) -> None:
        # Only the name here: it is resolved, and each address checked, at every attempt.
        if value is None:
            return
        host = urlsplit(value).hostname or ""
        if not callback_hosts().allows_host(host):
            raise ValidationError(f"host {host!r} is not in CALLBACK_ALLOWED_HOSTS")

    @validates("profile_ids")
    def distinct_profiles(self, value: list[int], **_: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("profile ids must be distinct")

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def some_profiles(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        # Only when nothing was asked for: a bad list already has its own message.
        asked = isinstance(original, dict) and original.get("profile_tags")
        if "profile_ids" in data and not data["profile_ids"] and not asked:
            raise ValidationError("choose at least one profile, by id or by tag", field_name="profile_ids")

    @validates_schema(skip_on_field_errors=False)
    def parameters_fit_processor(self, data: dict[str, Any], **_: Any) -> None:
        name = data.get("processor")
        if name is None:
            return
        processor = processors.get(name)
        if processor is None:
            raise ValidationError(
                f"unknown processor {name!r}; known: {', '.join(processors.names())}", field_name="processor"
            )
        try:
            data["parameters"] = processor.schema().load(data.get("parameters") or {})
        except ValidationError as exc:
            raise ValidationError({"parameters": exc.messages}) from exc


class Progress(Schema):
    total = fields.Integer()
    succeeded = fields.Integer()
    failed = fields.Integer()
    pending = fields.Integer()


class BatchOut(Schema):
    id = fields.Integer()
    name = fields.String()
    status = fields.String(validate=validate.OneOf([s.value for s in BatchStatus]))
    queue_position = fields.Integer(allow_none=True)
    processor = fields.String()
    parameters = fields.Dict()
    profile_ids = fields.List(fields.Integer())
    progress = fields.Method("get_progress", dump_only=True, metadata={"type": "object"})
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    error = fields.String(allow_none=True)
    item_timeout = fields.Float()
    callback_url = fields.String(allow_none=True, metadata={"description": "POSTed the batch when it ends"})
    retry_of = fields.Integer(allow_none=True, metadata={"description": "the failed batch this one retries"})
    waiting_code = fields.Method(
        "get_waiting_code",
        dump_only=True,
        metadata={"type": "string", "nullable": True, "enum": [*(code.value for code in WaitingCode), None]},
    )
    waiting_reason = fields.Method("get_waiting_reason", dump_only=True, metadata={"type": "string", "nullable": True})
    estimated_start_at = fields.Method(
        "get_estimated_start_at", dump_only=True, metadata={"type": "string", "format": "date-time", "nullable": True}
    )

    # Judged at dump time against the answer's one view of the queue (app/services/waiting.py).
    def get_waiting_code(self, batch: Any) -> str | None:
        code = waiting_of(batch).code
        return code.value if code is not None else None

    def get_waiting_reason(self, batch: Any) -> str | None:
        return waiting_of(batch).reason

    def get_estimated_start_at(self, batch: Any) -> str | None:
        at = waiting_of(batch).estimated_start_at
        return at.isoformat() if at is not None else None

    def get_progress(self, batch: Any) -> dict[str, int]:
        return {
            "total": batch.total_items,
            "succeeded": batch.succeeded_items,
            "failed": batch.failed_items,
            "pending": batch.pending_items,
        }


STATUS_VALUES = [status.value for status in BatchStatus]


class Moment(fields.Field):
    """An ISO 8601 date (midnight UTC) or date-time (UTC unless it names its offset)."""

    default_error_messages = {
        "invalid": "Not a valid date or date-time (ISO 8601, e.g. 2025-03-01 or 2025-03-01T08:00)."
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or not value.strip():
            raise self.make_error("invalid")
        try:
            # RFC 3339 lets `t` and `z` be lower case; fromisoformat wants them upper.
            moment = datetime.fromisoformat(value.strip().upper())
        except ValueError:
            raise self.make_error("invalid") from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# How OpenAPI describes a Moment: a date or a date-time.
MOMENT = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}


class StatusList(fields.List):
    """`?status=queued&status=failed`, or `?status=queued,failed`: a set of known statuses."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.String(validate=validate.OneOf(STATUS_VALUES)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any | None]:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in values):
            raise self.make_error("invalid")
        parts = [part.strip() for item in values for part in item.split(",") if part.strip()]
        if not parts:
            raise ValidationError("name at least one status, or leave the parameter out")
        return list(dict.fromkeys(super()._deserialize(parts, attr, data, **kwargs)))


class BatchFilterArgs(Schema):
    """The batch list's filters, shared by the API and the table (which names the dates `from` and `to`)."""

    q = fields.String(validate=validate.Length(max=200), metadata={"description": "name contains (any case)"})
    status = StatusList(metadata={"description": "one or more statuses, repeated or comma-separated"})
    processor = fields.String(validate=validate.Length(max=100), metadata={"description": "processor name"})
    created_by = fields.String(validate=validate.Length(max=200), metadata={"description": "who created it"})
    created_after = Moment(metadata={**MOMENT, "description": "created at or after (ISO 8601; a date means 00:00 UTC)"})
    created_before = Moment(metadata={**MOMENT, "description": "created before (ISO 8601; a date means 00:00 UTC)"})

    @validates_schema
    def dates_in_order(self, data: dict[str, Any], **_: Any) -> None:
        after, before = data.get("created_after"), data.get("created_before")
        if after is not None and before is not None and before <= after:
            raise ValidationError("must be later than created_after", field_name="created_before")


class BatchListArgs(PageArgs, BatchFilterArgs):
    pass


class TableFilterArgs(BatchFilterArgs):
    """The table's filters: whole days from `from` to `to`, both included, instead of two instants."""

    class Meta:
        exclude = ("created_after", "created_before")

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    created_from = fields.Date(data_key="from")
    created_to = fields.Date(data_key="to")

    @validates_schema
    def days_in_order(self, data: dict[str, Any], **_: Any) -> None:
        first, last = data.get("created_from"), data.get("created_to")
        if first is not None and last is not None and last < first:
            raise ValidationError("must not be before the 'from' date", field_name="to")


class ItemOut(Schema):
    profile_id = fields.Integer()
    status = fields.String(validate=validate.OneOf([s.value for s in ItemStatus]))
    attempts = fields.Integer()
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class LogArgs(PageArgs):
    """?after= pages forward from a line, ?before= back from one, ?level= sets a floor."""

    after = fields.Integer(validate=validate.Range(min=0, max=MAX_LOG_ID))
    before = fields.Integer(validate=validate.Range(min=0, max=MAX_LOG_ID))
    level = fields.String(validate=validate.OneOf(LOG_LEVELS))

    @validates_schema
    def _one_bound(self, data: dict[str, Any], **_: Any) -> None:
        # Refused rather than read as a range: each names the side a page fills
        # from, and a client paging one way has no use for the other.
        if "after" in data and "before" in data:
            raise ValidationError("give after or before, not both", "before")


class LogOut(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    level = fields.String()
    message = fields.String()


class CallbackAttemptOut(Schema):
    """One POST of a completion webhook: when, the answer's status (null without one), what went wrong."""

    at = fields.DateTime()
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)


class MoveBody(Schema):
    position = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class ResumeBody(Schema):
    position = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        metadata={"description": "where the batch rejoins the queue (past the end means last); default the end"},
    )


class MoveForm(Schema):
    """The table's "to position" form: the same rule as MoveBody, from a form's text."""

    position = fields.Integer(required=True, validate=validate.Range(min=1, max=2**31 - 1))
