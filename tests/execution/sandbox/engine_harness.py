"""Test support for the in-process engine: a canned host channel and a fork-per-call runner."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from execution.sandbox.engine import Engine
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.transform import transform

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHARED_BUNDLES = PROJECT_ROOT.parent / "shared" / "bundles"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "sandbox"
CONTEXT = {"sessionId": "session-0123456789", "resourceId": "org_public_1"}


class CannedHost:
    """Stands in for the host side of fetch: canned responses, and the host's deny rules for addresses."""

    def __init__(self, responses: dict[str, tuple[int, bytes]] | None = None) -> None:
        self.responses = responses or {}
        self.requests: list[dict[str, Any]] = []
        self.ready: list[tuple[int, dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def start_fetch(self, request: dict[str, Any]) -> int:
        self.requests.append(request)
        fetch_id = len(self.requests)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.ready.append((fetch_id, self._answer(request)))
        return fetch_id

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        if not self.ready:
            time.sleep(max(0.0, min(timeout, 5.0)))
            return []
        # One completion per poll, so several fetches really are in flight at once.
        done = [self.ready.pop(0)]
        self.in_flight -= len(done)
        return done

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        host = urlsplit(request["url"]).hostname or ""
        if host == "localhost" or _is_internal(host):
            return {"ok": False, "error": {"type": "egress_denied", "message": f"host {host} is not allowed"}}
        status, body = self.responses.get(request["url"], (200, b'{"ok": true}'))
        return {
            "ok": True,
            "status": status,
            "statusText": "OK",
            "url": request["url"],
            "headers": [["content-type", "application/json"]],
            "body_b64": base64.b64encode(body).decode(),
        }


class CancellingHost(CannedHost):
    """A host that cancels the call the first time the engine waits."""

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        raise SandboxError("cancelled", "the run was cancelled")


def _is_internal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def bundle_bytes(name: str) -> bytes:
    """Bytes of a shared sample bundle (name relative to ../shared/bundles) or a local fixture."""
    shared = SHARED_BUNDLES / name
    return shared.read_bytes() if shared.exists() else (FIXTURES / name).read_bytes()


def loaded_engine(name: str, *, env: dict[str, str] | None = None, limits: Limits | None = None) -> Engine:
    """A new engine with the named bundle transformed and loaded."""
    engine = Engine()
    engine.load(transform(bundle_bytes(name)).script, env=env or {}, limits=limits)
    return engine


def invoke_in_fork(engine: Engine, *, host: CannedHost | None = None, **call: Any) -> dict[str, Any]:
    """Fork, invoke once in the child (as the worker pool does), and return its result.

    The result gains "broken" (engine.broken in the child afterwards) and "host" (what the host saw).
    """
    call.setdefault("context", CONTEXT)
    call.setdefault("limits", Limits())
    call.setdefault("input", {})
    host = host or CannedHost()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_fd)
            result = engine.invoke(host=host, **call)
            result["broken"] = engine.broken
            result["host"] = {"requests": host.requests, "max_in_flight": host.max_in_flight}
            payload = json.dumps(result).encode()
            with os.fdopen(write_fd, "wb") as out:
                out.write(payload)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent, then exit
            code = 3
            os.write(write_fd, json.dumps({"child_exception": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as src:
        while chunk := src.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    assert os.WIFEXITED(status), f"child died: status {status}"
    result: dict[str, Any] = json.loads(data)
    assert "child_exception" not in result, result
    return result
