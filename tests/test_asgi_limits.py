"""The ASGI body cap: oversized bodies get a JSON 413 before Django reads them."""

from __future__ import annotations

import json

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application

from lightfast_cloud.asgi_limits import BodySizeLimit

LIMIT = 1000


def http_scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/bundles",
        "raw_path": b"/api/v1/bundles",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


class InnerApp:
    """Records how much body it read; answers 200."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def run(app, scope, chunks: list[bytes]) -> list[dict]:
    communicator = ApplicationCommunicator(app, scope)
    for i, chunk in enumerate(chunks):
        more = i < len(chunks) - 1
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": more})
    messages = [await communicator.receive_output(5)]
    if messages[0]["type"] == "http.response.start":
        messages.append(await communicator.receive_output(5))
    await communicator.wait(5)
    return messages


@pytest.mark.asyncio
async def test_declared_length_over_cap_is_refused_unread() -> None:
    inner = InnerApp()
    start, body = await run(
        BodySizeLimit(inner, limit_bytes=LIMIT), http_scope([(b"content-length", b"5000000000")]), [b"x" * 10]
    )
    assert start["status"] == 413
    error = json.loads(body["body"])["error"]
    assert error["type"] == "payload_too_large" and error["detail"]["limit_bytes"] == LIMIT
    assert inner.read == 0


@pytest.mark.asyncio
async def test_chunked_body_is_cut_off_when_it_passes_the_cap() -> None:
    inner = InnerApp()
    start, body = await run(BodySizeLimit(inner, limit_bytes=LIMIT), http_scope([]), [b"x" * 600] * 5)
    assert start["status"] == 413
    assert inner.read <= 600, "the app saw no byte past the cap"


@pytest.mark.asyncio
async def test_body_under_cap_reaches_the_app() -> None:
    inner = InnerApp()
    start, body = await run(BodySizeLimit(inner, limit_bytes=LIMIT), http_scope([]), [b"x" * 400, b"y" * 400])
    assert start["status"] == 200 and body["body"] == b"ok"
    assert inner.read == 800


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_django_behind_the_guard_answers_json_413() -> None:
    app = BodySizeLimit(get_asgi_application(), limit_bytes=LIMIT)
    start, body = await run(app, http_scope([(b"content-type", b"application/javascript")]), [b"z" * 800] * 3)
    assert start["status"] == 413
    assert json.loads(body["body"])["error"]["type"] == "payload_too_large"
