"""Processors that never look at the stop, for the hard-stop fallbacks and killed workers
(PROCESSOR_MODULES=tests.faults.stubborn)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields

from app.extensions import db
from app.processors.base import ProfileData, RunContext
from app.processors.registry import register
from app.services.runs import items as run_items


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
    first_attempt_only = fields.Boolean(load_default=False)


class Hang:
    """Blocks for good on the profiles in `hang_profiles` (with `first_attempt_only`, only on an item's first
    attempt: a test kills the process under it, and the run dispatched again gets through)."""

    name = "hang"
    description = "Blocks for good on the profiles in `hang_profiles`, ignoring stops and time limits."
    schema = HangParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if profile.name in parameters["hang_profiles"] and (
            not parameters.get("first_attempt_only") or ctx.item.attempt == 1
        ):
            threading.Event().wait()  # nobody sets it
        return {"profile": profile.name}


class UntilShutdownParameters(Schema):
    hold_profiles = fields.List(fields.String(), load_default=list)


class UntilShutdown:
    """Holds the items of `hold_profiles` until its worker is asked to shut down, then succeeds.

    An item surely under way when the test signals the worker, however slow the machine.
    """

    name = "until_shutdown"
    description = "Holds the profiles in `hold_profiles` until the worker shuts down (at most a minute)."
    schema = UntilShutdownParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if profile.name in parameters["hold_profiles"]:
            # Looked at, not waited on: the flag is set by a signal handler running in this very
            # thread, and Event.wait holds the lock that the handler's Event.set would need.
            deadline = time.monotonic() + 60
            while not run_items.shutdown_requested.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
        return {"profile": profile.name}


class DieAtParameters(Schema):
    die_profile = fields.String(required=True)
    written_to = fields.String(required=True)


class DieAt:
    """Ends its own pool process on the first attempt at `die_profile`, after saving (to the file
    `written_to`) which items of the batch were written as succeeded at that moment: a crash in the
    middle of a group of outcomes not yet written."""

    name = "die_at"
    description = "Kills its own process on the first attempt at `die_profile`."
    schema = DieAtParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if profile.name == parameters["die_profile"] and ctx.item.attempt == 1:
            with db.engine.connect() as connection:
                written = connection.execute(
                    db.text("SELECT id FROM batch_items WHERE batch_id = :id AND status = 'succeeded'"),
                    {"id": ctx.batch_id},
                ).scalars()
                Path(parameters["written_to"]).write_text(json.dumps(sorted(written)))
            os.kill(os.getpid(), signal.SIGKILL)
        return {"profile": profile.name}


register(Stubborn())
register(DieAt())
register(Hang())
register(UntilShutdown())
