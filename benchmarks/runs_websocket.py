"""The websocket figure of `benchmarks/runs.py`: message frame → first streamed run event, over a real server.

`bench_websocket(organization, version, runs)` starts the launcher's web server on the scratch stack that
`runs.py` built (same environment: data directory, database, redis, media root), opens one
websocket authenticated with an API key in `Sec-WebSocket-Protocol`, and for each run sends a
`message` frame and times the `run-accepted` frame and the run's first event (`start`, seq 1),
then reads the run to its end before the next one. Prints JSON lines through `emit`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOL_MESSAGE = 'Weather please: getWeather {"city": "Paris"}'


def _start_server() -> tuple[subprocess.Popen[bytes], int]:
    """One web process as the launcher starts it (LIGHTFAST_WEB_SERVER), on a socket bound here."""
    from lightfast_cloud.launcher import web_listen_socket, web_server_argv, web_server_default

    listener = web_listen_socket("127.0.0.1", 0)
    port = int(listener.getsockname()[1])
    process = subprocess.Popen(
        web_server_argv(server=web_server_default(), fd=listener.fileno()),
        env=dict(os.environ),
        cwd=ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        pass_fds=(listener.fileno(),),
    )
    listener.close()  # the server holds its own copy
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"HEAD /api/v1/ HTTP/1.0\r\n\r\n")
                if sock.recv(16):
                    return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the web server did not answer")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def bench_websocket(organization: Any, version: Any, runs: int, emit: Callable[..., None]) -> None:
    """Message frame → first run event latency over one websocket to a real server (demo model, one tool)."""
    from websockets.sync.client import connect

    from organizations.services import Actor, apikey_create

    _, raw_key = apikey_create(
        organization=organization,
        name="bench websocket",
        scopes=["read", "execute"],
        actor=Actor.system("bench"),
    )
    server, port = _start_server()
    accepted_ms: list[float] = []
    first_ms: list[float] = []
    total_ms: list[float] = []
    try:
        url = f"ws://127.0.0.1:{port}/ws/v1/chat/{version.bundle.slug}/weather/"
        protocols = ["lightfast.v1", f"lightfast.key.{raw_key}"]
        with connect(url, subprotocols=protocols, proxy=None, open_timeout=30) as ws:  # type: ignore[arg-type]
            for index in range(runs + 5):
                started = time.perf_counter()
                ws.send(json.dumps({"type": "message", "text": TOOL_MESSAGE}))
                accepted_at = first_at = None
                while True:
                    frame = json.loads(ws.recv(timeout=30))
                    now = time.perf_counter()
                    if frame["type"] == "run-accepted":
                        accepted_at = now
                    elif frame.get("seq") == 1:
                        first_at = now
                    if frame["type"] == "data-status" and frame["data"]["status"] not in (
                        "queued",
                        "running",
                    ):
                        break
                if index < 5:
                    continue  # warm-up: the server's and the worker's connections, the sandbox zygote
                assert accepted_at is not None and first_at is not None
                accepted_ms.append((accepted_at - started) * 1000)
                first_ms.append((first_at - started) * 1000)
                total_ms.append((now - started) * 1000)
    finally:
        _stop(server)
    emit(
        figure="websocket_first_event_latency_ms",
        transport="websocket",
        model="demo",
        tool_calls=1,
        runs=runs,
        p50=round(_percentile(first_ms, 0.5), 2),
        p99=round(_percentile(first_ms, 0.99), 2),
        accepted_p50=round(_percentile(accepted_ms, 0.5), 2),
        run_total_p50=round(_percentile(total_ms, 0.5), 2),
        target_p50=20,
    )
