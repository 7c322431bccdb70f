"""The queue's state and health responses."""

from marshmallow import Schema, fields, validate

from app.config import FAILURE_POLICIES
from app.schemas.batches import BatchOut


class QueueOut(Schema):
    paused = fields.Boolean()
    paused_by = fields.String(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)
    paused_reason = fields.String(
        allow_none=True,
        metadata={
            "description": "why the queue is paused: `stopped`, `drained`, or the failure policy's "
            "`N failed batches in a row (failure policy)`; null when not paused"
        },
    )
    draining = fields.Boolean(metadata={"description": "the queue pauses when the running batch ends"})
    running = fields.Nested(BatchOut, allow_none=True)
    queued_count = fields.Integer()
    start_enabled = fields.Boolean()


class PolicyBody(Schema):
    """The failure policy: what the queue does after failed batches."""

    on_failure = fields.String(
        required=True,
        validate=validate.OneOf(FAILURE_POLICIES),
        metadata={"description": "`continue`: the next batch starts after a failure; `pause`: the queue pauses"},
    )
    pause_after_failures = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=1000),
        metadata={"description": "pause after this many failed batches in a row (0: never)"},
    )


class PolicyForm(PolicyBody):
    """The table's policy form: the same rule as PolicyBody, from a form's text."""

    pause_after_failures = fields.Integer(required=True, validate=validate.Range(min=0, max=1000))


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
