"""Processors that never look at the stop, for the hard-stop fallbacks (PROCESSOR_MODULES=tests.faults.stubborn)."""

from __future__ import annotations

import threading
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


class HangParameters(Schema):
    hang_profiles = fields.List(fields.String(), load_default=list)


class Hang:
    name = "hang"
    description = "Blocks for good on the profiles in `hang_profiles`, ignoring stops and time limits."
    schema = HangParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if profile.name in parameters["hang_profiles"]:
            threading.Event().wait()  # nobody sets it
        return {"profile": profile.name}


register(Stubborn())
register(Hang())
