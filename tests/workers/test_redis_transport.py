"""The broker transport (app/redis_transport.py) on the session's real Redis."""

from __future__ import annotations

import uuid

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
