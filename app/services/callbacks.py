"""Completion webhooks: claim the deliveries that are due, sign and send them, record each attempt.

A delivery row appears, by a trigger, in the transaction that makes a batch terminal
(app/models/callbacks.py). Senders (workers/callbacks.py, in the main process of every
worker and beat, never in the Celery pool) call `deliver_due` in rounds:

- `claim_due` takes the due rows with FOR UPDATE SKIP LOCKED and moves each one's
  `next_attempt_at` past the send's timeout before committing: a lease, so that two
  processes never send the same attempt at once, and a sender that dies mid-send leaves a
  delivery that is simply due again once the lease runs out;
- the POSTs go out with no transaction open, a few at a time, each cut at CALLBACK_TIMEOUT
  (connect to last byte, app/services/outbound.py), so a slow receiver holds one sender
  thread for that long at most and the queue not at all;
- `record` writes the attempt and either marks the delivery delivered or schedules the next
  attempt with exponential backoff (jittered, capped), until CALLBACK_RETRY_FOR after the
  first, when it gives up, in the batch's log too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select

from app.extensions import db
from app.models import ApiToken, Batch, BatchLog, CallbackAttempt, CallbackDelivery
from app.models._types import utcnow
from app.services.batches import get_batch
from app.services.outbound import AllowList, OutboundError, post
from app.services.pages import Page, paginate

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Batchq-Signature"
# A claim's lease runs this long past the send's own timeout: time to record the attempt.
LEASE_MARGIN = 30.0
# Deliveries one round claims and sends at once: a bound on a sender's threads and connections.
ROUND_SIZE = 4
# The longest error kept per attempt.
MAX_ERROR = 500


@dataclass(frozen=True)
class Policy:
    """Where webhooks may go, how long one may take, and how they are retried."""

    allowed: AllowList
    timeout: float
    retry_base: float
    retry_cap: float
    retry_for: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        return cls(
            allowed=AllowList.parse(config.get("CALLBACK_ALLOWED_HOSTS", ())),
            timeout=float(config["CALLBACK_TIMEOUT"]),
            retry_base=float(config["CALLBACK_RETRY_BASE"]),
            retry_cap=float(config["CALLBACK_RETRY_CAP"]),
            retry_for=float(config["CALLBACK_RETRY_FOR"]),
        )

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failed ones: base, 2 x base, 4 x base ..., capped.

        Jittered upwards by up to a quarter, so that receivers coming back from an outage are not
        hit by every pending delivery at the same instant; each delay still exceeds the one before.
        """
        exponent = min(attempts - 1, 40)
        delay: float = min(self.retry_base * 2.0**exponent, self.retry_cap)
        return delay * random.uniform(1.0, 1.25)


@dataclass(frozen=True)
class Claim:
    """A delivery taken for one attempt: what to send, where, and the key to sign it with."""

    delivery_id: int
    batch_id: int
    status: str
    url: str
    body: bytes
    secret: str | None
    attempts: int
    created_at: datetime

    @property
    def idempotency_key(self) -> str:
        return f"batch-{self.batch_id}-{self.status}"


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: the answer's status code (None when there was no answer) and what went wrong."""

    at: datetime
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Batchq-Signature value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def batch_body(batch: Batch) -> str:
    """The batch as GET /batches/<id> answers it now: the webhook's body."""
    from app.schemas.batches import BatchOut  # the API's own shape; schemas import services, not the reverse

    return json.dumps(BatchOut().dump(batch), separators=(",", ":"))


def claim_due(policy: Policy, limit: int = ROUND_SIZE) -> list[Claim]:
    """Take up to `limit` due deliveries for one attempt each, leasing them past the send's timeout."""
    due = (
        select(CallbackDelivery)
        .where(
            CallbackDelivery.delivered_at.is_(None),
            CallbackDelivery.gave_up_at.is_(None),
            CallbackDelivery.next_attempt_at <= func.now(),
        )
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    lease_until = utcnow() + timedelta(seconds=policy.timeout + LEASE_MARGIN)
    claims = []
    for delivery in db.session.scalars(due).all():
        batch = db.session.get(Batch, delivery.batch_id)
        assert batch is not None  # the delivery's row is deleted with its batch
        if delivery.payload is None:
            # Fixed at the first attempt: every retry sends the same bytes under the same key.
            delivery.payload = batch_body(batch)
        delivery.next_attempt_at = lease_until
        claims.append(
            Claim(
                delivery_id=delivery.id,
                batch_id=batch.id,
                status=delivery.status,
                url=batch.callback_url or "",
                body=delivery.payload.encode(),
                secret=_secret_of(batch.callback_token_id),
                attempts=delivery.attempts,
                created_at=delivery.created_at,
            )
        )
    db.session.commit()
    return claims


def _secret_of(token_id: int | None) -> str | None:
    """The submitting token's secret as it is now (a rotated one signs from its rotation on)."""
    if token_id is None:
        return None
    return db.session.scalar(select(ApiToken.webhook_secret).where(ApiToken.id == token_id))


def send(claim: Claim, policy: Policy) -> Outcome:
    """POST the claim's body, signed; never raises: every failure is the attempt's error."""
    if claim.secret is None:
        return Outcome(utcnow(), None, "the submitting token is gone or has no webhook secret: nothing to sign with")
    timestamp = int(time.time())
    headers = {
        SIGNATURE_HEADER: sign(claim.secret, claim.body, timestamp),
        "Idempotency-Key": claim.idempotency_key,
        "User-Agent": "batchq-webhooks",
    }
    at = utcnow()
    try:
        answer = post(claim.url, claim.body, allowed=policy.allowed, headers=headers, timeout=policy.timeout)
    except OutboundError as exc:
        return Outcome(at, None, str(exc)[:MAX_ERROR])
    if 200 <= answer.status < 300:
        return Outcome(at, answer.status, None)
    return Outcome(at, answer.status, f"answered {answer.status}: {answer.text[:200]}"[:MAX_ERROR])


def record(claim: Claim, outcome: Outcome, policy: Policy) -> None:
    """Write the attempt; mark the delivery delivered, or schedule its next attempt, or give up."""
    delivery = db.session.get(CallbackDelivery, claim.delivery_id, with_for_update=True)
    if delivery is None:  # its batch was deleted meanwhile
        db.session.rollback()
        return
    db.session.add(
        CallbackAttempt(
            delivery_id=delivery.id,
            batch_id=delivery.batch_id,
            at=outcome.at,
            status_code=outcome.status_code,
            error=outcome.error,
        )
    )
    delivery.attempts += 1
    now = utcnow()
    if outcome.delivered:
        delivery.delivered_at = now
    else:
        next_at = now + timedelta(seconds=policy.delay(delivery.attempts))
        if next_at > delivery.created_at + timedelta(seconds=policy.retry_for):
            delivery.gave_up_at = now
            message = f"completion webhook ({claim.status}) given up after {delivery.attempts} attempts"
            log.warning("batch %s: %s; last error: %s", delivery.batch_id, message, outcome.error)
            db.session.add(BatchLog(batch_id=delivery.batch_id, message=message, level="warning", at=now))
        else:
            delivery.next_attempt_at = next_at
    db.session.commit()


def deliver_due(policy: Policy, run: Callable[[Callable[[], Any]], Any], limit: int = ROUND_SIZE) -> int:
    """One sender round: claim, send in parallel, record each as it completes; return how many were claimed.

    `run` runs a database step in an app context of its own (the sender's threads have none).
    """
    claims: list[Claim] = run(lambda: claim_due(policy, limit))
    if not claims:
        return 0
    with ThreadPoolExecutor(max_workers=len(claims), thread_name_prefix="batchq-webhook") as pool:
        sending = {pool.submit(send, claim, policy): claim for claim in claims}
        for done in as_completed(sending):
            claim, outcome = sending[done], done.result()
            run(lambda claim=claim, outcome=outcome: record(claim, outcome, policy))  # type: ignore[misc]
    return len(claims)


def attempts_of(batch_id: int) -> list[CallbackAttempt]:
    """Every attempt at the batch's webhooks, oldest first."""
    return list(db.session.scalars(_attempts(batch_id)))


def list_attempts(batch_id: int, page: int, per_page: int) -> Page[CallbackAttempt]:
    """A page of the batch's webhook attempts, oldest first (GET /batches/<id>/callbacks)."""
    get_batch(batch_id)
    return paginate(_attempts(batch_id), page, per_page)


def _attempts(batch_id: int) -> Select[CallbackAttempt]:
    return select(CallbackAttempt).where(CallbackAttempt.batch_id == batch_id).order_by(CallbackAttempt.id)


def deliveries_of(batch_id: int) -> list[CallbackDelivery]:
    """The batch's webhooks, one per terminal status it reached."""
    query = select(CallbackDelivery).where(CallbackDelivery.batch_id == batch_id).order_by(CallbackDelivery.id)
    return list(db.session.scalars(query))
