"""The queue's state and health responses."""

from marshmallow import Schema, fields

from app.schemas.batches import BatchOut


class QueueOut(Schema):
    paused = fields.Boolean()
    paused_by = fields.String(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)
    running = fields.Nested(BatchOut, allow_none=True)
    queued_count = fields.Integer()
    start_enabled = fields.Boolean()


class HealthOut(Schema):
    status = fields.String()
    database = fields.String()
    broker = fields.String()
    workers = fields.List(fields.String())
