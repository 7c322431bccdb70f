"""Live-update hints published on Redis after a change commits.

Pub/sub is lossy by design: a hint only says "this changed, look again"; pages
re-read the database, so a lost hint costs a delay, never a wrong page.
"""

from __future__ import annotations

import json
import logging

import redis
from flask import current_app

log = logging.getLogger(__name__)


def redis_client() -> redis.Redis:
    """Return the process's Redis client (redis-py reconnects after fork by itself)."""
    client = current_app.extensions.get("redis")
    if client is None:
        client = redis.Redis.from_url(current_app.config["REDIS_URL"], socket_timeout=5, socket_connect_timeout=2)
        current_app.extensions["redis"] = client
    return client


# Number the event and publish it in one round trip: ids increase across every
# process, so a page that reconnects can tell what it missed.
_PUBLISH_NUMBERED = """
local id = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], '{"id":' .. id .. ',' .. ARGV[2])
return id
"""


def publish(kind: str, batch_id: int | None = None, **extra: object) -> None:
    """Announce a committed change; never raise, since the change itself already happened."""
    channel = current_app.config["EVENTS_CHANNEL"]
    rest = json.dumps({"kind": kind, "batch_id": batch_id, **extra})[1:]
    try:
        redis_client().eval(_PUBLISH_NUMBERED, 1, f"{channel}:seq", channel, rest)
    except redis.RedisError:
        log.warning("could not publish %s event for batch %s", kind, batch_id, exc_info=True)
