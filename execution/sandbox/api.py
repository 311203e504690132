"""The one entry point the platform uses to run bundle code: `introspect` and `invoke` (no Django here).

Backends are chosen by name (`local` now; `docker` later speaks the same runner
protocol). Every failure comes back classified: `invoke` returns an `InvokeResult`
with `ok=False` and an error from the taxonomy; `introspect` raises `SandboxError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SANDBOX_CRASH, SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.pool import shared_local_backend


class Bundle(Protocol):
    """What api needs of a transformed bundle (`transform.TransformedBundle`)."""

    script: str
    sha256: str
    bytes: int


class Backend(Protocol):
    """A place that runs runners: the local jail pool, later Docker."""

    def introspect(
        self,
        *,
        script: str,
        env: dict[str, str],
        filename: str,
        limits: Limits,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]: ...

    def invoke(
        self,
        *,
        key: str,
        script: str,
        env: dict[str, str],
        filename: str,
        agent: str,
        tool: str,
        input: Any,
        context: dict[str, Any],
        limits: Limits,
        egress: EgressPolicy | None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class InvokeResult:
    """Outcome of one tool call: output on success, a classified error otherwise."""

    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    logs: list[Any] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the CLI prints it and the API returns it."""
        return {
            "ok": self.ok,
            "output": self.output,
            "error": self.error,
            "logs": self.logs,
            "usage": self.usage,
        }


def _docker_backend() -> Backend:
    # Imported on first use: the Docker SDK is only needed where this backend is chosen.
    from execution.sandbox.docker_backend import shared_docker_backend

    return shared_docker_backend()


_BACKEND_FACTORIES: dict[str, Callable[[], Backend]] = {
    "local": shared_local_backend,
    "docker": _docker_backend,
}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make a backend available by name (the Docker backend registers itself here)."""
    _BACKEND_FACTORIES[name] = factory


def get_backend(name: str | None = None) -> Backend:
    """The backend called `name` (default: LIGHTFAST_SANDBOX_BACKEND, else `local`)."""
    chosen = name or os.environ.get("LIGHTFAST_SANDBOX_BACKEND") or "local"
    factory = _BACKEND_FACTORIES.get(chosen)
    if factory is None:
        raise SandboxError(
            SANDBOX_CRASH, f"unknown sandbox backend {chosen!r}", {"known": sorted(_BACKEND_FACTORIES)}
        )
    return factory()


def zygote_key(*, bundle_key: str, bundle: Bundle, env: dict[str, str]) -> str:
    """Key of the warm state a call may start from: org + version, bundle bytes, environment."""
    env_digest = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]
    return f"{bundle_key}|{bundle.sha256}|{env_digest}"


def introspect(
    bundle: Bundle,
    *,
    limits: Limits | None = None,
    backend: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate a bundle in a fresh sandbox and return its manifest (with sha256 and bytes)."""
    manifest = get_backend(backend).introspect(
        script=bundle.script, env=dict(env or {}), filename="bundle.js", limits=limits or Limits()
    )
    return {**manifest, "sha256": bundle.sha256, "bytes": bundle.bytes}


def invoke(
    bundle: Bundle,
    *,
    agent: str,
    tool: str,
    input: object,
    context: dict[str, Any],
    env: dict[str, str],
    egress: EgressPolicy,
    limits: Limits,
    bundle_key: str,
    cancel: threading.Event | None = None,
    backend: str | None = None,
) -> InvokeResult:
    """Run one tool of one agent on fresh JS state; never raises for bundle or limit failures."""
    started = time.monotonic()
    try:
        raw = get_backend(backend).invoke(
            key=zygote_key(bundle_key=bundle_key, bundle=bundle, env=env),
            script=bundle.script,
            env=dict(env),
            filename="bundle.js",
            agent=agent,
            tool=tool,
            input=input,
            context=dict(context),
            limits=limits,
            egress=egress,
            cancel=cancel,
        )
    except SandboxError as exc:
        # The call ended on the host side (killed, cancelled, crashed): only the host's clock is known.
        wall_ms = round((time.monotonic() - started) * 1000)
        usage = {**exc.usage, "wall_ms": wall_ms, "host_enforced": True}
        return InvokeResult(ok=False, error=exc.to_dict(), usage=usage)
    return InvokeResult(
        ok=bool(raw.get("ok")),
        output=raw.get("output"),
        error=raw.get("error"),
        logs=list(raw.get("logs") or []),
        usage=dict(raw.get("usage") or {}),
    )


def sandbox_status(backend: str | None = None) -> dict[str, Any]:
    """Status of the configured backend for /healthz, without starting it."""
    from execution.sandbox import jail

    chosen = backend or os.environ.get("LIGHTFAST_SANDBOX_BACKEND") or "local"
    if chosen == "docker":
        from execution.sandbox.docker_backend import docker_status

        return {"backend": chosen, **docker_status()}
    return {"backend": chosen, **jail.sandbox_status()}
