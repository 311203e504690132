"""The one entry point the platform uses to run bundle code: `introspect` and `invoke` (no Django here).

Backends are chosen by name (`local`: the jailed pool on this host; `docker`: containers that run
the same native runner and speak the same runner protocol). Every failure comes back classified:
`invoke` returns an `InvokeResult` with `ok=False` and an error from the taxonomy; `introspect`
raises `SandboxError`.
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
from execution.sandbox.errors import CANCELLED, CPU_LIMIT, INVALID_BUNDLE, SANDBOX_CRASH, SandboxError
from execution.sandbox.jail import CPU_BACKSTOP_MS
from execution.sandbox.limits import Limits
from execution.sandbox.locate import BUNDLE_FILENAME, located_call_error, located_load_error
from execution.sandbox.pool import USAGE_KEY, shared_local_backend
from execution.sandbox.values import clean_value


class Bundle(Protocol):
    """What api needs of a transformed bundle (`transform.TransformedBundle`)."""

    script: str
    sha256: str
    bytes: int


class Backend(Protocol):
    """A place that runs runners: the local jail pool or Docker containers."""

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
    """Make a backend available by name (tests plug their own pools in; `local` and `docker` are built in)."""
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


@dataclass
class IntrospectResult:
    """A bundle's manifest and what evaluating it cost (`usage["cpu_ms"]`, metered to the uploader)."""

    manifest: dict[str, Any]
    usage: dict[str, Any]


def introspect_metered(
    bundle: Bundle,
    *,
    limits: Limits | None = None,
    backend: str | None = None,
    env: dict[str, str] | None = None,
    upload: Callable[[], bytes] | None = None,
) -> IntrospectResult:
    """Evaluate a bundle in a fresh sandbox: its manifest (with sha256 and bytes) and its usage.

    A failure raises SandboxError whose `usage` holds the CPU the failed evaluation used; an error
    thrown by the bundle's code names the line and column in the uploaded file (locate.py; `upload`
    returns the uploaded bytes, needed only when the upload carried an inline source map).
    """
    chosen = limits or Limits()
    started = time.monotonic()
    try:
        raw = get_backend(backend).introspect(
            script=bundle.script, env=dict(env or {}), filename=BUNDLE_FILENAME, limits=chosen
        )
    except SandboxError as exc:
        wall_ms = round((time.monotonic() - started) * 1000)
        exc.usage = {**exc.usage, "cpu_ms": failed_cpu_ms(exc, chosen, wall_ms)}
        located = located_load_error(exc, getattr(bundle, "source_map", None), upload)
        if located is exc:
            raise
        raise located from None
    manifest = dict(raw)
    usage = manifest.pop(USAGE_KEY, None)
    return IntrospectResult(
        manifest={**manifest, "sha256": bundle.sha256, "bytes": bundle.bytes},
        usage=dict(usage) if isinstance(usage, dict) else {"cpu_ms": 0},
    )


def introspect(
    bundle: Bundle,
    *,
    limits: Limits | None = None,
    backend: str | None = None,
    env: dict[str, str] | None = None,
    upload: Callable[[], bytes] | None = None,
) -> dict[str, Any]:
    """Evaluate a bundle in a fresh sandbox and return its manifest (with sha256 and bytes)."""
    return introspect_metered(bundle, limits=limits, backend=backend, env=env, upload=upload).manifest


def failed_cpu_ms(error: SandboxError, limits: Limits, wall_ms: int) -> int:
    """The CPU to meter for a load or call that ended in `error` rather than in a result.

    A process killed by the kernel's CPU backstop ran its whole CPU limit and the backstop, even
    if nothing could report it. When the host ended the call itself (its wall deadline, a dead
    worker), nothing measured it: the most it could have used is charged (one thread: at most the
    wall time, at most the CPU limit and the backstop). A cancel, which the bundle cannot cause,
    is charged only what was measured.
    """
    measured = error.usage.get("cpu_ms")
    measured_ms = (
        int(measured) if isinstance(measured, int | float) and not isinstance(measured, bool) else -1
    )
    bound = limits.cpu_ms + CPU_BACKSTOP_MS
    if error.code == CPU_LIMIT:
        return max(measured_ms, bound)
    if measured_ms >= 0:
        return measured_ms
    if error.code == CANCELLED:
        return 0
    return max(0, min(wall_ms, bound))


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
    # The platform's value rule (values.py) where a tool input enters: a lone surrogate ("a\ud83db"
    # is valid JSON) reaches the tool as U+FFFD, whichever way the input came (API, CLI, agent loop).
    input = clean_value(input)
    try:
        raw = get_backend(backend).invoke(
            key=zygote_key(bundle_key=bundle_key, bundle=bundle, env=env),
            script=bundle.script,
            env=dict(env),
            filename=BUNDLE_FILENAME,
            agent=agent,
            tool=tool,
            input=input,
            context=dict(context),
            limits=limits,
            egress=egress,
            cancel=cancel,
        )
    except SandboxError as exc:
        # The call ended without a result (killed, cancelled, crashed, a lost zygote): its CPU is what
        # the worker measured from the kernel, and at least what the backstop lets a call use.
        wall_ms = round((time.monotonic() - started) * 1000)
        usage = {"wall_ms": wall_ms, "host_enforced": True, "cpu_ms": failed_cpu_ms(exc, limits, wall_ms)}
        if "load_cpu_ms" in exc.usage:
            usage["load_cpu_ms"] = exc.usage["load_cpu_ms"]
        return InvokeResult(ok=False, error=_located(exc.to_dict(), bundle), usage=usage)
    error = raw.get("error")
    if isinstance(error, dict) and not raw.get("ok"):
        error = _located(error, bundle)
    return InvokeResult(
        ok=bool(raw.get("ok")),
        output=raw.get("output"),
        error=error,
        logs=list(raw.get("logs") or []),
        usage=dict(raw.get("usage") or {}),
    )


def _located(error: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    """A call's error with the upload position of the bundle code that failed (locate.py)."""
    source_map = getattr(bundle, "source_map", None)
    if error.get("type") == INVALID_BUNDLE and isinstance(error.get("message"), str):
        # The bundle's top level threw while its zygote loaded it: placed like an introspection error.
        loaded = SandboxError(INVALID_BUNDLE, error["message"], error.get("detail") or {})
        return located_load_error(loaded, source_map).to_dict()
    return located_call_error(error, source_map)


def sandbox_status(backend: str | None = None) -> dict[str, Any]:
    """Status of the configured backend for /healthz, without starting it."""
    from execution.sandbox import jail

    chosen = backend or os.environ.get("LIGHTFAST_SANDBOX_BACKEND") or "local"
    if chosen == "docker":
        from execution.sandbox.docker_backend import docker_status

        return {"backend": chosen, **docker_status()}
    return {"backend": chosen, **jail.sandbox_status()}
