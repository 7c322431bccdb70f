"""A processor that never looks at the stop, for the hard-stop fallback (PROCESSOR_MODULES=tests.faults.stubborn)."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import Schema, fields

from app.processors.base import ProfileData, RunContext
from app.processors.registry import register


class StubbornParameters(Schema):
    seconds = fields.Float(required=True)


class Stubborn:
    name = "stubborn"
    description = "Sleeps `seconds` without ever checking for a stop."
    schema = StubbornParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        time.sleep(float(parameters["seconds"]))
        return {"slept": parameters["seconds"]}


register(Stubborn())
