"""Batch bodies and responses, and the processor-specific parameter check."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from app import processors
from app.models import BatchStatus, ItemStatus
from app.processors.base import ITEM_TIMEOUT_MAX, ITEM_TIMEOUT_MIN
from app.processors.builtin import Number
from app.schemas.common import PageArgs
from app.services.logs import LEVELS
from app.services.waiting import WaitingCode, waiting_of

MAX_PROFILES = 10_000
# Log line ids are PostgreSQL bigints.
MAX_LOG_ID = 2**63 - 1


class BatchCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    profile_ids = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1)),
        required=True,
        validate=validate.Length(min=1, max=MAX_PROFILES),
    )
    processor = fields.String(required=True)
    parameters = fields.Dict(keys=fields.String(), load_default=dict)
    # Absent: the processor's own limit, else ITEM_TIMEOUT_DEFAULT (app/services/batches.py).
    item_timeout = Number(allow_nan=False, validate=validate.Range(min=ITEM_TIMEOUT_MIN, max=ITEM_TIMEOUT_MAX))

    @validates("profile_ids")
    def distinct_profiles(self, value: list[int], **_: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("profile ids must be distinct")

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


class BatchListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf([s.value for s in BatchStatus]))


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
    level = fields.String(validate=validate.OneOf(LEVELS))

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


class MoveBody(Schema):
    position = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
