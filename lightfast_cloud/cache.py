"""The Django cache backend: Django's RedisCache with one client (so one connection pool) per process."""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_clients: dict[tuple[Any, ...], RedisCacheClient] = {}
_clients_lock = threading.Lock()


class ProcessRedisCache(RedisCache):
    """Django's RedisCache whose client and connection pool are shared by the whole process.

    Django keeps one cache object per thread and, under ASGI, per request context, and each of
    Django's RedisCache objects builds its own client with its own connection pool: every request
    that touched the cache (the rate limit does, on every API call) opened a new connection to
    Redis and dropped it afterwards. redis-py's pool is thread-safe (and resets itself in a forked
    child), so one client per server list and options serves every thread and request.
    """

    @cached_property
    def _cache(self) -> RedisCacheClient:
        # Django's own attributes (the stubs do not declare them).
        servers: list[str] = self._servers  # type: ignore[attr-defined]
        options: dict[str, Any] = self._options  # type: ignore[attr-defined]
        key = (tuple(servers), repr(sorted(options.items())))
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(servers, **options)  # type: ignore[attr-defined]
            return client
