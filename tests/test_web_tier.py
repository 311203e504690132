"""The web server as the launcher runs it: the body cap holds before and while reading, errors are JSON."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest
from django.conf import settings

from tests.execution.live_transport import asgi_server_fixture  # noqa: F401 - the `asgi_server` fixture

pytestmark = pytest.mark.django_db(transaction=True)


def _raw_request(
    port: int, head: bytes, body: bytes = b"", timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """Send `head` (and `body`) on a fresh socket; the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        header, _, rest = answer.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in header.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    status = int(header.split(b" ", 2)[1])
    return status, json.loads(rest[:length])


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent(asgi_server: Any) -> None:
    # Only the head is sent: the answer must not wait for a body the server will never read.
    declared = settings.LIGHTFAST_MAX_REQUEST_BYTES + 1
    head = (
        f"POST /api/v1/bundles?slug=big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/javascript\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    status, body = _raw_request(asgi_server.port, head)
    assert status == 413
    assert body["error"]["type"] == "payload_too_large"
    assert body["error"]["detail"]["limit_bytes"] == settings.LIGHTFAST_MAX_REQUEST_BYTES


def test_a_chunked_body_over_the_cap_is_cut_off_while_it_streams(asgi_server: Any) -> None:
    cap = settings.LIGHTFAST_MAX_REQUEST_BYTES
    block = b"\0" * (1024 * 1024)

    def chunks() -> Any:
        for _ in range(cap // len(block) + 2):
            yield block

    with httpx.Client(base_url=asgi_server.http, timeout=60) as client:
        try:
            response = client.post(
                "/api/v1/bundles?slug=big",
                content=chunks(),
                headers={"Content-Type": "application/javascript"},
            )
        except httpx.TransportError:
            pytest.fail("the server must answer 413 rather than drop the connection")
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


def test_a_multipart_body_is_parsed_after_authentication_and_its_errors_are_json(
    alice: Any, asgi_server: Any
) -> None:
    no_parts = b"--x--\r\n"
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        anonymous = client.post("/api/v1/bundles", content=no_parts, headers=multipart)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "not_authenticated"
        broken = client.post(
            "/api/v1/bundles",
            content=b"--x\r\nnot a part header\r\n",
            headers={**multipart, "Authorization": f"Bearer {alice.keys['all']}"},
        )
        empty = client.post(
            "/api/v1/bundles",
            content=no_parts,
            headers={**multipart, "Authorization": f"Bearer {alice.keys['all']}"},
        )
    for response in (broken, empty):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["type"] in ("invalid_request", "invalid_upload", "invalid_bundle")


@pytest.mark.parametrize("megabytes", [4, 96])
def test_a_client_sending_an_oversized_body_whole_still_reads_the_413(
    asgi_server: Any, megabytes: int
) -> None:
    # A client library that sends the whole body before it reads the answer (httpx; urllib3 2, so
    # requests, alike): the server answered from Content-Length without reading the body and closed,
    # the client's write fails, and it reads the JSON 413 that was sent before the close. (aiohttp
    # raises the failed write instead: benchmarks/README.md.)
    body = b"\0" * (max(megabytes * 1024 * 1024, settings.LIGHTFAST_MAX_REQUEST_BYTES + 1))
    with httpx.Client(base_url=asgi_server.http, timeout=60) as client:
        try:
            response = client.post(
                "/api/v1/bundles?slug=big", content=body, headers={"Content-Type": "application/javascript"}
            )
        except httpx.TransportError as exc:
            pytest.fail(f"the client saw {exc!r} instead of the 413")
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


@pytest.mark.parametrize("megabytes", [64, 300])
def test_a_client_that_raises_a_failed_write_reads_the_413_too(asgi_server: Any, megabytes: int) -> None:
    # aiohttp sends the whole body and raises when a write fails: the server, having answered from
    # Content-Length, half-closes and drops the rest of the body instead of closing with it unread
    # (which makes the kernel reset the connection, losing the answer).
    import asyncio

    import aiohttp

    total = max(megabytes * 1024 * 1024, settings.LIGHTFAST_MAX_REQUEST_BYTES + 1)

    async def zeros() -> Any:
        # Streamed as an upload from a file would be: written a megabyte at a time.
        sent = 0
        while sent < total:
            block = b"\0" * min(1024 * 1024, total - sent)
            sent += len(block)
            yield block

    async def post() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{asgi_server.http}/api/v1/bundles?slug=big",
                data=zeros(),
                headers={"Content-Type": "application/javascript", "Content-Length": str(total)},
            ) as response:
                return response.status, await response.json()

    try:
        status, answer = asyncio.run(post())
    except aiohttp.ClientError as exc:
        pytest.fail(f"the client saw {exc!r} instead of the 413")
    assert status == 413
    assert answer["error"]["type"] == "payload_too_large"
