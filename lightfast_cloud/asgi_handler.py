"""Django's ASGI handler with each request's synchronous work in one thread hop, on long-lived threads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest
from django.http.response import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


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
    * Django's `handle` takes two more hops per request: one for the synchronous receivers of
      `request_started` (closing stale database connections) and one for `response.close()`
      (`request_finished`). Here `request_started` is sent in the request's one hop, before the
      middleware chain, and a response that is not streamed is closed there too, once built (its
      content is bytes by then): a JSON answer takes one hop instead of three (each about 150 µs of
      CPU here). A streamed response is closed after its last chunk, as before.

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

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django 5.2's `ASGIHandler.handle`, with `request_started` and a built response's close moved
        into the request's hop (`_respond`); tests/test_library_contracts.py pins the original."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await sync_to_async(signals.request_started.send, thread_sensitive=True)(
                sender=self.__class__, scope=scope
            )
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close, thread_sensitive=True)()
            return

        async def process_request(request: HttpRequest, send: Any) -> HttpResponseBase:
            response = await sync_to_async(self._respond, thread_sensitive=True)(request, scope)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected during send_response
            return response

        # Catch a disconnect while the response is made (Django's order: the listener is checked first).
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        processing = asyncio.create_task(process_request(request, send))
        tasks: list[asyncio.Task[Any]] = [listening, processing]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass  # the client disconnected
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()  # views may handle their cancellation
                try:
                    await task
                except asyncio.CancelledError:
                    pass  # re-raised by the task, as expected
        try:
            response = processing.result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=True)()
        body_file.close()

    def _respond(self, request: HttpRequest, scope: dict[str, Any]) -> HttpResponseBase:
        """In the request's thread: `request_started`, the middleware chain and view, and the close of
        a response that is not streamed (`request_finished`)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self.get_response(request)
        # As Django's run_get_response does.
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming:
            response.close()
        return response
