"""The broker transport (app/redis_transport.py) on the session's real Redis."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from app import redis_transport


def test_a_channel_shares_one_redis_client_until_its_pool_is_replaced(app: Flask) -> None:
    with app.extensions["celery"].connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, redis_transport.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.connection_pool is channel.pool
        channel._disconnect_pools()  # what kombu does in a forked child
        with channel.conn_or_acquire() as after_fork:
            assert after_fork is not first and after_fork.connection_pool is channel.pool
            assert after_fork.ping()


def test_messages_published_and_acked_through_the_shared_client_arrive_once_in_order(app: Flask) -> None:
    with app.extensions["celery"].connection_for_write() as connection:
        queue = connection.SimpleQueue(f"transport-test-{uuid.uuid4().hex[:8]}")
        try:
            for index in range(3):
                queue.put({"index": index})
            received = []
            for _ in range(3):
                message = queue.get(timeout=5)
                received.append(message.payload["index"])
                message.ack()
            assert received == [0, 1, 2]
            with pytest.raises(queue.Empty):
                queue.get(block=False)
        finally:
            queue.close()


# The overrides must still be needed on the pinned kombu: each test below shows the stock
# transport's behaviour that the override exists for, so a kombu upgrade that mends it fails
# the test and says that the override can go.


def _closed_channel(channel_class: type) -> Any:
    """A channel whose connection has dropped its details, as kombu leaves it after losing Redis."""
    channel = object.__new__(channel_class)  # no connection of its own: only _connparams is called
    channel.connection = SimpleNamespace(client=None)
    return channel


def test_stock_kombu_still_fails_with_attribute_error_on_a_closed_connection_and_ours_raises_a_connection_error() -> (
    None
):
    """celery/kombu#582: a requeue or late ack on a closed channel raised AttributeError, which ends the worker."""
    import redis
    from kombu.transport import redis as kombu_redis

    with pytest.raises(AttributeError):  # Celery treats this as unrecoverable: the worker exits
        _closed_channel(kombu_redis.Channel)._connparams()
    with pytest.raises(redis.exceptions.ConnectionError):  # recoverable: the worker reconnects
        _closed_channel(redis_transport.Channel)._connparams()


def test_stock_kombu_still_builds_a_new_client_for_every_use(app: Flask) -> None:
    from kombu.transport import redis as kombu_redis

    with app.extensions["celery"].connection_for_write() as connection:
        channel = connection.default_channel
        stock_client = kombu_redis.Channel._create_client
        assert stock_client(channel) is not stock_client(channel)  # what each publish and ack paid for
        assert channel._create_client() is channel._create_client()
