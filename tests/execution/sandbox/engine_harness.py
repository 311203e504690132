"""Test support for the in-process engine: a canned host channel and a fork-per-call runner."""

from __future__ import annotations

import atexit
import base64
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from execution.sandbox.engine import Engine
from execution.sandbox.errors import INVALID_INPUT, LIMIT_CODES, SandboxError
from execution.sandbox.jail import JailConfig, JailLayers
from execution.sandbox.limits import Limits
from execution.sandbox.pool import resolve_runner, runner_from_env
from execution.sandbox.protocol import encode_frame, read_frame, wait_readable, write_frame
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


class NativeEngine:
    """A native runner process (through its launcher and jail) with one bundle loaded in a zygote.

    Stands in for a loaded `Engine` when LIGHTFAST_SANDBOX_RUNNER=native, so the engine tests
    exercise the C engine through its real protocol and zygote, which runs every call in place and
    restores its JS heap afterwards; the runner is started in its verify mode, so every restore is
    also compared with the snapshot byte for byte. `broken` is derived the way the Python engine
    sets it: a call that ended with a limit error. When a call killed the zygote (the runner says
    `zygote_lost`), the next call loads the bundle again, as the worker pool does.
    """

    def __init__(self, script: str, *, env: dict[str, str], limits: Limits | None) -> None:
        layers = (
            JailLayers()
            if os.geteuid() == 0
            else JailLayers.only("rlimits", "seccomp", "close_fds", "clear_env")
        )
        self.script = script
        self.env = env
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "execution.sandbox.native.launch",
                "--jail",
                JailConfig(layers=layers).to_json(),
                "--test-verify-restore",
            ],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={},
            start_new_session=True,
        )
        atexit.register(self.close)
        assert self.proc.stdin and self.proc.stdout
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        self.next_id = 0
        ready = read_frame(self.stdout)
        assert ready.get("message") == "ready" and ready["detail"]["engine"] == "ok", ready
        self.load_frame = {
            "type": "load",
            "key": "test",
            "script": script,
            "env": env,
            "filename": "bundle.js",
            "evict": [],
            "limits": (limits or Limits()).to_dict(),
        }
        self.zygote_lost = False
        self.loads = 0
        self._load()

    def _load(self) -> None:
        self._request(self.load_frame, CannedHost())
        self.zygote_lost = False
        self.loads += 1

    def close(self) -> None:
        """Kill the runner and everything under it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _request(self, frame: dict[str, Any], host: CannedHost) -> dict[str, Any]:
        self.next_id += 1
        call_id = self.next_id
        write_frame(self.stdin, {**frame, "id": call_id})
        fetch_ids: dict[int, int] = {}  # host's id -> runner's fetch_id
        cancelled = False
        first = True  # the host is asked at once: the zygote reads stdin only when the call waits
        while True:
            if first or not wait_readable(self.stdout, 0.01):
                first = False
                if not cancelled:
                    try:
                        done = host.poll(0.0)
                    except SandboxError:
                        write_frame(self.stdin, {"type": "cancel", "id": call_id})
                        cancelled = True
                        continue
                    for host_id, result in done:
                        fetch_id = fetch_ids.pop(host_id)
                        write_frame(
                            self.stdin,
                            {"type": "fetch-result", "id": call_id, "fetch_id": fetch_id, "result": result},
                        )
                continue
            reply = read_frame(self.stdout)
            if reply["type"] == "fetch":
                fetch_ids[host.start_fetch(reply["request"])] = reply["fetch_id"]
            elif reply["type"] == "error":
                if reply.get("zygote_lost"):
                    self.zygote_lost = True
                raise SandboxError.from_dict(reply["error"])
            elif reply["type"] == "result":
                assert reply.pop("id") == call_id
                del reply["type"]
                return reply

    def introspect(self) -> dict[str, Any]:
        """The manifest, from a throw-away child of the runner's base."""
        frame = {"type": "introspect", "script": self.script, "env": self.env, "filename": "bundle.js"}
        manifest: dict[str, Any] = self._request(frame, CannedHost())["manifest"]
        return manifest

    def invoke(self, *, host: CannedHost, **call: Any) -> dict[str, Any]:
        """One call in the zygote (loaded again first if the last call killed it); Engine.invoke's result."""
        limits: Limits = call.pop("limits")
        if self.zygote_lost:
            self._load()
        frame = {"type": "invoke", "key": "test", **call, "limits": limits.to_dict()}
        try:
            encode_frame(frame)
        except (TypeError, ValueError, RecursionError) as exc:
            # The host refuses such a request before any runner sees it (pool.py does the same).
            error = SandboxError(INVALID_INPUT, f"the input is not JSON: {exc}").to_dict()
            return {"ok": False, "error": error, "logs": [], "usage": {}}
        try:
            result = self._request(frame, host)
        except SandboxError as exc:
            # The worker answered for a zygote that died in the call (e.g. killed by the CPU backstop).
            return {"ok": False, "error": exc.to_dict(), "logs": [], "usage": {}, "broken": True,
                    "child_killed": True}
        result["broken"] = not result["ok"] and result["error"]["type"] in LIMIT_CODES
        return result


def native_requested() -> bool:
    """Whether this test run asked for the native runner (LIGHTFAST_SANDBOX_RUNNER=native, binary built)."""
    return resolve_runner(runner_from_env()) == "native"


def loaded_engine(
    name: str, *, env: dict[str, str] | None = None, limits: Limits | None = None
) -> Engine | NativeEngine:
    """A new engine with the named bundle transformed and loaded (a native runner when requested)."""
    if native_requested():
        return NativeEngine(transform(bundle_bytes(name)).script, env=env or {}, limits=limits)
    engine = Engine()
    engine.load(transform(bundle_bytes(name)).script, env=env or {}, limits=limits)
    return engine


def invoke_in_fork(
    engine: Engine | NativeEngine, *, host: CannedHost | None = None, **call: Any
) -> dict[str, Any]:
    """Fork, invoke once in the child (as the worker pool does), and return its result.

    The result gains "broken" (engine.broken in the child afterwards) and "host" (what the host saw).
    """
    call.setdefault("context", CONTEXT)
    call.setdefault("limits", Limits())
    call.setdefault("input", {})
    host = host or CannedHost()
    if isinstance(engine, NativeEngine):
        answer = engine.invoke(host=host, **call)
        answer["host"] = {"requests": host.requests, "max_in_flight": host.max_in_flight}
        return answer
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
