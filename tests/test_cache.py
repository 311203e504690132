"""The cache backend keeps one Redis client per process, whatever thread or request context asks."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches


def _touch() -> int:
    cache = caches["default"]
    cache.set("lf-cache-test", 1, 30)
    assert cache.get("lf-cache-test") == 1
    return id(cache._cache)  # type: ignore[attr-defined]


async def _request() -> int:
    # A request as the ASGI server runs it: a task in a context of its own (an empty one here, as
    # in a server whose own context never touched the cache).
    touch = sync_to_async(_touch, thread_sensitive=False)
    task = asyncio.get_running_loop().create_task(touch(), context=contextvars.Context())
    return await task


def _connections_received() -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


@pytest.mark.asyncio
async def test_requests_in_their_own_contexts_share_one_client_and_its_connections() -> None:
    # Under ASGI every request runs in a context of its own, and Django hands each context its own
    # cache object: those objects must still share one client (one connection pool).
    clients = set()
    for _ in range(3):  # warm: the pool holds a connection now
        clients.add(await _request())
    before = await sync_to_async(_connections_received)()
    for _ in range(40):
        clients.add(await _request())
    after = await sync_to_async(_connections_received)()
    assert len(clients) == 1
    # One connection for each _connections_received() call; requests opened none of their own.
    assert after - before <= 3, f"{after - before} new Redis connections for 40 requests"
