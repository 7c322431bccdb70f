"""The built-in processors of the contract: noop, sleep and http."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates

from app.processors.base import ItemFailed, ProfileData, RunContext, StopRequested
from app.processors.registry import register
from app.services.outbound import AllowList, OutboundError, post_json


class Number(fields.Float):
    """A JSON number only: the string "5" is refused rather than read as 5."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class NoParameters(Schema):
    """noop takes no parameters (unknown keys are refused)."""


class SleepParameters(Schema):
    seconds = Number(required=True, allow_nan=False, validate=validate.Range(min=0, max=3600))
    fail_profiles = fields.List(fields.String(), load_default=list)


def allowed_hosts() -> AllowList:
    """Hosts, addresses and CIDRs the http processor may call (HTTP_PROCESSOR_ALLOWED_HOSTS)."""
    return AllowList.parse(current_app.config.get("HTTP_PROCESSOR_ALLOWED_HOSTS", ()))


class HttpParameters(Schema):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    timeout = Number(load_default=10.0, allow_nan=False, validate=validate.Range(min=0.1, max=600))

    @validates("url")
    def host_is_allowed(self, value: str, **_: Any) -> None:
        # Only the name here: it is resolved, and each address checked, when the item calls it.
        host = urlsplit(value).hostname or ""
        if not allowed_hosts().allows_host(host):
            raise ValidationError(f"host {host!r} is not in HTTP_PROCESSOR_ALLOWED_HOSTS")


class Noop:
    name = "noop"
    description = "Succeeds at once."
    schema: type[Schema] = NoParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        return {"profile": profile.name}


class Sleep:
    name = "sleep"
    description = "Waits, then fails for the named profiles and succeeds for the rest."
    schema: type[Schema] = SleepParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        if ctx.wait(float(parameters["seconds"])):
            raise StopRequested()
        if profile.name in parameters.get("fail_profiles", []):
            raise ItemFailed(f"profile {profile.name} is listed in fail_profiles")
        return {"slept": parameters["seconds"]}


class Http:
    name = "http"
    description = (
        "POSTs the profile and parameters as JSON to url (no redirects followed, at most timeout seconds,"
        " 1 MiB of answer); any non-2xx fails the item."
    )
    schema: type[Schema] = HttpParameters

    def process(self, profile: ProfileData, parameters: dict[str, Any], ctx: RunContext) -> Any:
        url = parameters["url"]
        allowed = allowed_hosts()  # read now: the thread below has no app context
        if not allowed.allows_host(urlsplit(url).hostname or ""):
            raise ItemFailed("host is no longer in HTTP_PROCESSOR_ALLOWED_HOSTS")
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                outcome["response"] = post_json(
                    url,
                    {"profile": profile.__dict__, "parameters": parameters, "batch_id": ctx.batch_id},
                    allowed=allowed,
                    # Items run at least once: the receiver can tell a repeat by its key.
                    headers={"Idempotency-Key": ctx.item.idempotency_key, "Batchq-Attempt": str(ctx.item.attempt)},
                    timeout=float(parameters["timeout"]),
                )
            except OutboundError as exc:
                outcome["error"] = exc
            finally:
                done.set()

        # The request runs beside us so a stop is noticed within a second even mid-request.
        threading.Thread(target=call, daemon=True, name=f"http-item-{profile.id}").start()
        while not done.wait(0.2):
            if ctx.stop_requested():
                raise StopRequested()
        if "error" in outcome:
            raise ItemFailed(f"request failed: {outcome['error']}")
        response = outcome["response"]
        if 300 <= response.status < 400:
            raise ItemFailed(f"HTTP {response.status} from {url} (redirects are not followed)")
        if not 200 <= response.status < 300:
            raise ItemFailed(f"HTTP {response.status} from {url}")
        return {"status": response.status, "body": response.text[:2000]}


for _processor in (Noop(), Sleep(), Http()):
    register(_processor)
