"""A real web server (the launcher's) serving the project for transport tests, and small clients for it."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from lightfast_cloud.launcher import web_listen_socket, web_server_argv, web_server_default
from tests.services import SharedServices, spawn_service, stop_group, wait_ready


@dataclass
class AsgiServer:
    """A running web process of the project (the launcher's server, LIGHTFAST_WEB_SERVER)."""

    process: subprocess.Popen[bytes]
    port: int
    listener: socket.socket

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_group(self.process, 10)
        self.listener.close()


def start_asgi_server(timeout: float = 30.0) -> AsgiServer:
    """One web process as the launcher starts it, on the test database and redis; waits until it answers."""
    # Bound here and inherited, as in the launcher: the port is ours from the start (no race for it).
    listener = web_listen_socket("127.0.0.1", 0)
    port = int(listener.getsockname()[1])
    fd = listener.fileno()
    process = spawn_service(web_server_argv(server=web_server_default(), fd=fd), pass_fds=(fd,))
    server = AsgiServer(process=process, port=port, listener=listener)

    def answers() -> bool:
        # The socket accepts from the start; the server is up once it answers a request.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("HEAD", "/api/v1/")
            connection.getresponse().read()
            return True
        except OSError:
            time.sleep(0.05)
            return False
        finally:
            connection.close()

    if wait_ready(process, "web server", answers, timeout):
        return server
    server.stop()
    raise RuntimeError("the web server did not answer in time")


@pytest.fixture(name="asgi_server")
def asgi_server_fixture(
    transactional_db: None, redis_server: str, media_root: Any, shared_services: SharedServices
) -> Iterator[AsgiServer]:
    """A real web server on the test database (started after media_root so it sees the same files)."""
    server: AsgiServer = shared_services.take("asgi_server", start_asgi_server)
    reusable = False
    try:
        yield server
        reusable = True
    finally:
        shared_services.give_back("asgi_server", server, reusable=reusable)


def key_protocols(key: str) -> list[str]:
    """The subprotocols a client offers to authenticate with an API key."""
    return ["lightfast.v1", f"lightfast.key.{key}"]


def ws_connect(server: AsgiServer, path: str, *, key: str | None = None, **kwargs: Any) -> ClientConnection:
    """A websocket to `path`, authenticated with `key` in the subprotocol header when given."""
    if key is not None:
        kwargs.setdefault("subprotocols", key_protocols(key))
    kwargs.setdefault("proxy", None)
    return connect(f"{server.ws}{path}", open_timeout=10, **kwargs)


def recv_json(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    """The next frame, parsed."""
    frame: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return frame


def recv_until_end(ws: ClientConnection, run_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Frames of `run_id` up to and including its terminal `data-status`."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = recv_json(ws, timeout=max(0.1, deadline - time.monotonic()))
        if frame.get("run") != run_id:
            continue
        frames.append(frame)
        if frame.get("type") == "data-status" and frame["data"]["status"] not in ("queued", "running"):
            return frames


def closed_with(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes; the close code and the frames read before it."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd is not None else None), frames


def public_seqs(run_id: str) -> list[int]:
    """The seqs of a run's events that live streams send (not the private log lines)."""
    from execution.selectors import run_events_after
    from execution.stream import is_private_chunk

    return [event.seq for event in run_events_after(run_id, 0) if not is_private_chunk(event.chunk())]


def channel_subscriptions(redis_url: str) -> set[bytes]:
    """The channel layer's channels some connection subscribes to in redis (`PUBSUB CHANNELS`)."""
    with redis.Redis.from_url(redis_url) as client:
        return set(client.pubsub_channels("asgi*"))


def subscriptions_left(redis_url: str, before: set[bytes], timeout: float = 10.0) -> set[bytes]:
    """The subscriptions not in `before` once the server has had `timeout` seconds to drop them."""
    deadline = time.monotonic() + timeout
    left = channel_subscriptions(redis_url) - before
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = channel_subscriptions(redis_url) - before
    return left
