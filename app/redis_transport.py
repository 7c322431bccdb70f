"""kombu's Redis transport with one fault mended and one cost removed.

The fault: a Redis restart must not end the worker. When the broker connection
drops while a message is unacknowledged (always, during a batch run: acks_late),
kombu 5.7 closes the channel after dropping the connection's details, and the
channel's last attempt to requeue the message, or a late ack, fails with
AttributeError inside `_connparams` instead of a connection error. Celery calls
that unrecoverable and the worker exits. Raised as the connection error it is,
kombu and Celery handle it as one: the worker reconnects, the message stays in
Redis's unacked set, and the run's lease, token and the recovery tasks decide
what happens to the batch.
Upstream: the same AttributeError from `_connparams` once the connection's
details are gone is celery/kombu#582 (closed without a fix for this path); still
so in kombu 5.7.0, which tests/workers/test_redis_transport.py checks, so that
an upgrade that mends it fails that test and this override can go.

The cost: kombu builds a new redis-py client for every publish, ack and
unacked-message record (about 0.2 ms of Python each here, most of it copying
redis-py's table of response callbacks), and a handoff between two batches
takes about ten of them. A client is only a view on the channel's connection
pool and is safe to share between threads, so each channel keeps one.
No upstream issue found for this; the test beside the other shows that kombu
5.7.0 still builds a client per use.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: redis.Redis | None = None

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous=asynchronous)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        # A new pool (after a fork or a reconnect) gets a new client.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """The transport class to use for this broker URL (None: kombu's choice)."""
    if broker_url.split("://", 1)[0] in ("redis", "rediss"):
        return f"{__name__}:Transport"
    return None
