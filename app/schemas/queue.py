"""The queue's state and health responses."""

from marshmallow import Schema, fields, validate

from app.schemas.batches import BatchOut


class QueueOut(Schema):
    paused = fields.Boolean()
    paused_by = fields.String(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)
    running = fields.Nested(BatchOut, allow_none=True)
    queued_count = fields.Integer()
    start_enabled = fields.Boolean()


class WorkerOut(Schema):
    """A live worker, as its last heartbeat described it."""

    name = fields.String()
    host = fields.String()
    pool = fields.String(allow_none=True)
    concurrency = fields.Integer(allow_none=True)
    queues = fields.List(fields.String())
    batch = fields.Integer(allow_none=True, metadata={"description": "the running batch this worker's run holds"})
    last_seen = fields.DateTime()


class HealthOut(Schema):
    status = fields.String(validate=validate.OneOf(["ok", "degraded"]))
    database = fields.String(validate=validate.OneOf(["ok", "unreachable"]))
    broker = fields.String(validate=validate.OneOf(["ok", "unreachable"]))
    workers = fields.List(fields.String(), metadata={"description": "names of the workers heard from recently"})
    beat = fields.String(validate=validate.OneOf(["ok", "missing"]))
    worker_details = fields.List(fields.Nested(WorkerOut))
