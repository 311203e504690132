"""LocalJailBackend: reuse, replacement after crashes/timeouts/cancels, threads, fetch service, clean exit."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SandboxError
from execution.sandbox.jail import sandbox_status
from execution.sandbox.limits import Limits
from execution.sandbox.native import native_runner_available
from execution.sandbox.pool import LocalJailBackend, PoolConfig, runner_from_env
from tests.egress_servers import ca_file_for_tests, serve

SECRET = "sk-pool-secret"


@pytest.fixture
def pool() -> Iterator[LocalJailBackend]:
    """Two jailed workers that accept test probes."""
    backend = LocalJailBackend(PoolConfig(workers=2, test_probes=True))
    try:
        yield backend
    finally:
        backend.shutdown()


def _wait_healthy(pool: LocalJailBackend, workers: int = 2, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while pool.status()["idle"] < workers:
        assert time.monotonic() < deadline, pool.status()
        time.sleep(0.02)


def _pids(pool: LocalJailBackend) -> set[int]:
    return {worker.proc.pid for worker in pool._all}


def test_workers_are_reused(pool: LocalJailBackend) -> None:
    before = _pids(pool)
    for _ in range(20):
        assert pool.probe("ids")["uid"] == 65534
    assert _pids(pool) == before


def test_crash_is_classified_and_the_pool_stays_healthy(pool: LocalJailBackend) -> None:
    with pytest.raises(SandboxError) as crashed:
        pool.probe("crash")
    assert crashed.value.code == "sandbox_crash"
    assert "SIGSEGV" in crashed.value.message
    with pytest.raises(SandboxError) as exited:
        pool.probe("exit", {"code": 7})
    assert exited.value.code == "sandbox_crash"
    # A throw-away child dying leaves its worker intact: the next calls work at once.
    assert pool.probe("ids")["uid"] == 65534
    _wait_healthy(pool)


def test_cpu_rlimit_backstop_classifies_cpu_limit(pool: LocalJailBackend) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxError) as exc:
        pool.probe("spin", limits=Limits(cpu_ms=500, wall_ms=10_000))
    assert exc.value.code == "cpu_limit"
    assert time.monotonic() - started < 5
    assert pool.probe("ids")["uid"] == 65534


def test_host_enforces_wall_limit_and_replaces_the_worker(pool: LocalJailBackend) -> None:
    before = _pids(pool)
    started = time.monotonic()
    with pytest.raises(SandboxError) as exc:
        pool.probe("sleep", {"seconds": 30}, limits=Limits(wall_ms=300))
    elapsed = time.monotonic() - started
    assert exc.value.code == "timeout"
    assert elapsed < 1.0
    _wait_healthy(pool)
    assert len(_pids(pool) - before) == 1  # exactly the timed-out worker was replaced
    assert pool.probe("ids")["uid"] == 65534


def test_cancel_from_another_thread_stops_the_call_within_a_second(pool: LocalJailBackend) -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(SandboxError) as exc:
        pool.probe("sleep", {"seconds": 30}, limits=Limits(wall_ms=30_000), cancel=cancel)
    assert exc.value.code == "cancelled"
    assert time.monotonic() - started < 1.2
    _wait_healthy(pool)


def test_many_threads_share_the_pool(pool: LocalJailBackend) -> None:
    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(lambda _: pool.probe("ids")["uid"], range(200)))
    assert results == [65534] * 200
    assert pool.status()["alive"] == 2


def test_shutdown_leaves_no_processes() -> None:
    backend = LocalJailBackend(PoolConfig(workers=2, test_probes=True))
    pids = _pids(backend)
    backend.probe("ids")
    backend.shutdown()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(SandboxError):
        backend.probe("ids")


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"got_secret": self.headers.get("Authorization") == f"Bearer {SECRET}"}).encode()
        self.send_response(200)
        self.send_header("Authorization", self.headers.get("Authorization", ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[int]:
    """HTTPS server on the host's loopback (test CA) that reports whether the secret arrived."""
    with serve(_Echo, tls=True) as port:
        yield port


def test_fetch_frames_go_through_the_egress_policy(pool: LocalJailBackend, echo_server: int) -> None:
    # The worker itself has no network (netns + seccomp); only the host can fetch for it.
    policy = EgressPolicy(
        allow_hosts=["localhost"],
        unsafe_allow_loopback_for_tests=True,
        unsafe_ca_file_for_tests=ca_file_for_tests(),
        secret_headers={f"localhost:{echo_server}": {"Authorization": f"Bearer {SECRET}"}},
    )
    request = {"url": f"https://localhost:{echo_server}/", "method": "GET", "headers": [], "body_b64": None}
    result = pool.probe("fetch", {"request": request}, egress=policy)
    assert result["ok"] is True
    assert json.loads(base64.b64decode(result["body_b64"])) == {"got_secret": True}
    assert SECRET not in json.dumps(result)
    denied = pool.probe("fetch", {"request": {**request, "url": "http://169.254.169.254/"}}, egress=policy)
    assert denied == {"ok": False, "error": {"type": "egress_denied", "message": denied["error"]["message"]}}
    no_policy = pool.probe("fetch", {"request": request})
    assert no_policy["ok"] is False and no_policy["error"]["type"] == "egress_denied"


def test_runner_choice_falls_back_to_python_when_the_native_binary_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from execution.sandbox import native

    monkeypatch.setattr(native, "BINARY", tmp_path / "not-built")
    backend = LocalJailBackend(PoolConfig(workers=1, runner="native", test_probes=True))
    try:
        assert backend.status()["runner"] == "python"
        assert backend.probe("env") == {}
    finally:
        backend.shutdown()


@pytest.mark.skipif(not native_runner_available(), reason="the native runner is not built (make setup)")
def test_native_runner_is_reported_for_healthz() -> None:
    backend = LocalJailBackend(PoolConfig(workers=1, runner="native", test_probes=True))
    try:
        assert backend.status()["runner"] == "native"
        assert sandbox_status()["runner"] == "native"
        assert backend.probe("ids")["uid"] == 65534 or os.geteuid() != 0
    finally:
        backend.shutdown()


def test_unknown_runner_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTFAST_SANDBOX_RUNNER", "rust")
    with pytest.raises(ValueError):
        runner_from_env()
