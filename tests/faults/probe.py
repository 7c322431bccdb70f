"""A processor that reports how the worker's database session is set up (PROCESSOR_MODULES=tests.faults.probe)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from app.extensions import db
from app.processors.base import ProfileData, RunContext
from app.processors.registry import register


class Probe:
    name = "probe"
    description = "Returns the worker's synchronous_commit and whether its pool pings connections."
    schema = Schema

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        setting = db.session.execute(db.text("SHOW synchronous_commit")).scalar()
        db.session.rollback()
        return {"synchronous_commit": setting, "pre_ping": bool(db.engine.pool._pre_ping)}


register(Probe())
