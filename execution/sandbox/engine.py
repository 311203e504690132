"""In-process QuickJS engine: evaluates the runtime, loads one bundle, introspects it, runs one tool call.

Used only inside sandbox worker processes (see the runner); work in progress.
"""

from __future__ import annotations

from typing import Any, Protocol

from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits


class HostChannel(Protocol):
    """The host side of a call: starts fetches and reports their completion."""

    def start_fetch(self, request: dict[str, Any]) -> int:
        """Start a fetch ({url, method, headers, body_b64}) and return its id."""
        ...

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Return fetches completed since the last poll, waiting at most `timeout` s for the first."""
        ...


class Engine:
    """One QuickJS context with the runtime evaluated; load a bundle once, then fork per call."""

    def __init__(self) -> None:
        self._broken = False

    @property
    def broken(self) -> bool:
        """True after a limit error: the context must be discarded."""
        return self._broken

    def load(
        self, script: str, *, env: dict[str, str], filename: str = "bundle.js", limits: Limits | None = None
    ) -> None:
        """Evaluate a transformed bundle and find its agents."""
        raise SandboxError("sandbox_crash", "engine not implemented yet")

    def introspect(self) -> dict[str, Any]:
        """Return the manifest of the loaded bundle (without sha256/bytes)."""
        raise SandboxError("sandbox_crash", "engine not implemented yet")

    def invoke(
        self,
        *,
        agent: str,
        tool: str,
        input: object,  # noqa: A002 - the contract's name
        context: dict[str, Any],
        limits: Limits,
        host: HostChannel,
    ) -> dict[str, Any]:
        """Run one tool call and return {ok, output|error, logs, usage}."""
        raise SandboxError("sandbox_crash", "engine not implemented yet")
