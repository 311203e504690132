"""An ASGI guard that refuses request bodies above the platform's hard cap before Django reads them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Any: Django's and Channels' handlers each annotate the ASGI callables a little differently.
ASGIApp = Callable[..., Awaitable[Any]]


def _too_large_body(limit: int) -> bytes:
    return json.dumps(
        {
            "error": {
                "type": "payload_too_large",
                "message": f"The request body exceeds the platform limit of {limit} bytes.",
                "detail": {"limit_bytes": limit},
            }
        }
    ).encode()


class BodySizeLimit:
    """Wrap an HTTP ASGI app; bodies over `limit_bytes` get a JSON 413 and never reach it."""

    def __init__(self, app: ASGIApp, *, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def _reject(self, send: Send) -> None:
        body = _too_large_body(self.limit_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit_bytes:
                    await self._reject(send)
                    return
        received = 0
        rejected = False

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    rejected = True
                    await self._reject(send)
                    # Django sees a client that went away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
