"""Django's ASGI handler with each request's synchronous work in one thread hop, on long-lived threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest
from django.http.response import HttpResponseBase


@dataclass
class _Thread:
    """One long-lived thread for thread-sensitive work, and how many requests use it now."""

    executor: ThreadPoolExecutor
    requests: int = 0


class PooledThreadASGIHandler(ASGIHandler):
    """Django's ASGIHandler, with two costs of its per-request machinery taken out.

    * Django starts a thread for every request (a `ThreadSensitiveContext` of its own), and that
      thread opens its own database connection (with SQLite: a new connection, its pragmas and
      functions, per request). Here each request's thread-sensitive work runs on the least busy of
      `threads` long-lived threads (asgiref's `ThreadSensitiveContext(executor=...)`), which keep
      their connections (PostgreSQL's are given back to the pool at each request's end, as before).
    * Under ASGI Django adapts each synchronous middleware to async and back, one thread hop per
      `process_request`/`process_response`. Here the middleware chain is built synchronously and
      run with one hop per request; an async view (the SSE chat) runs inside it via async_to_sync,
      and its response still streams from the event loop.

    Several requests may share a thread: their synchronous parts take turns on it, each one whole
    (a transaction never spans two of a request's thread hops).
    """

    def __init__(self, *, threads: int) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._threads = [
            _Thread(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"web-{number}"))
            for number in range(max(1, threads))
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one HTTP request with its thread-sensitive work on the least busy long-lived thread."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = min(self._threads, key=lambda candidate: candidate.requests)
        thread.requests += 1
        try:
            async with ThreadSensitiveContext(executor=thread.executor):
                await self.handle(scope, receive, send)
        finally:
            thread.requests -= 1

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The synchronous middleware chain (and view) in one hop to this request's thread."""
        response: HttpResponseBase = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        return response
