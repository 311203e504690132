"""The escape and abuse corpus' harness: hostile bundles written inline, run through the public
sandbox API (`execution.sandbox.api`), and the one assertion every case ends with.

Each case must end CLASSIFIED (an error type from the taxonomy, or a normal result whose content
proves the attack did nothing), WITHIN ITS LIMIT (the sandbox's own usage figures, and a generous
host-side bound that only proves nothing hangs), with THE POOL HEALTHY afterwards, and THE NEXT
CALL OF ANOTHER ORGANIZATION UNAFFECTED: a victim bundle of another organization, run on the same
worker (the local backend's corpus pool has exactly one), must see exactly the state a fresh
sandbox shows it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import CODES
from execution.sandbox.jail import CPU_BACKSTOP_MS
from execution.sandbox.limits import MIB, Limits
from execution.sandbox.pool import LocalJailBackend, PoolConfig
from execution.sandbox.transform import TransformedBundle, transform

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT.parent / "shared" / "bundles"

# Small limits keep the corpus fast; flood cases end at these instead of the production defaults.
FAST = Limits(cpu_ms=400, wall_ms=1200, memory_mb=48, log_bytes=16 * 1024, output_bytes=64 * 1024)
# What the sandbox's own figures may exceed a limit by (a check interval, a last allocation).
CPU_SLACK_MS = 150
WALL_SLACK_MS = 250
# The host-side bound proves only that nothing hangs; load on a shared machine cannot make it flaky.
HOST_SLACK_S = 3.0
# Room for the truncation marker the runtime appends once the log budget is spent.
LOG_MARKER_BYTES = 200

ATTACKER = "org_mallory"
VICTIM = "org_victim"
VICTIM_ENV = {"VICTIM_TOKEN": "victim-only-value"}

PRELUDE = """\
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
var anyInput = z.object({}).passthrough();
var t = (execute, inputSchema = anyInput) => createTool({ description: "corpus case", inputSchema, execute });
"""


def hostile_bundle(tools: dict[str, str], *, top_level: str = "") -> TransformedBundle:
    """A Lightfast bundle with one agent, `corpus`, whose tools are the given JS function expressions."""
    body = ",\n".join(f"  {name}: t({source})" for name, source in tools.items())
    source = (
        PRELUDE
        + top_level
        + f"\nvar tools = {{\n{body}\n}};\n"
        + 'var corpus = createAgent({ name: "corpus", system: "hostile", model: "demo", tools });\n'
        + "export default createLightfast({ agents: { corpus } });\n"
    )
    return transform(source.encode())


# Everything a call can observe of the state it starts from. Any pollution, leaked global, patched
# built-in or foreign environment left by an earlier call shows up as a difference.
VICTIM_TOOLS = {
    "fingerprint": """async (input, context) => {
    if (input && input.waitMs) await new Promise((resolve) => setTimeout(resolve, input.waitMs));
    const names = (o) => Object.getOwnPropertyNames(o).sort();
    const symbols = (o) => Object.getOwnPropertySymbols(o).map(String).sort();
    const enumerated = (o) => { const keys = []; for (const k in o) keys.push(k); return keys; };
    const natives = {};
    for (const [label, fn] of Object.entries({
      stringify: JSON.stringify, parse: JSON.parse, push: Array.prototype.push, then: Promise.prototype.then,
      resolve: Promise.resolve, keys: Object.keys, toStr: Object.prototype.toString,
      call: Function.prototype.call,
      hasOwn: Object.prototype.hasOwnProperty, map: Array.prototype.map, join: Array.prototype.join,
    })) {
      const source = typeof fn === "function" ? Function.prototype.toString.call(fn) : "";
      natives[label] = source.includes("[native code]");
    }
    const timer = await new Promise((resolve) => setTimeout(() => resolve("fired"), 1));
    const a = [];
    a.push(1, 2);
    return {
      echo: input,
      resourceId: context.resourceId,
      env: { ...process.env },
      objectProto: names(Object.prototype), objectProtoSymbols: symbols(Object.prototype),
      arrayProto: names(Array.prototype), functionProto: names(Function.prototype),
      promiseProto: names(Promise.prototype), stringProto: names(String.prototype),
      errorProto: names(Error.prototype), json: names(JSON), promise: names(Promise),
      globals: names(globalThis), globalSymbols: symbols(globalThis),
      inheritedKeys: enumerated({}), arrayInheritedKeys: enumerated([]),
      natives,
      stringified: JSON.stringify({ a: [1, "x", null], b: { c: true } }),
      parsed: JSON.parse('{"n":[1,2]}'),
      pushed: a.length,
      timer,
      microtask: await Promise.resolve(7),
      random: typeof Math.random(),
      frozen: [Object.isFrozen(Object.prototype), Object.isExtensible(Object.prototype)],
      fetchType: typeof fetch,
    };
  }""",
}


@dataclass
class CorpusSandbox:
    """The backend the corpus runs on, and the victim organization's view of a fresh sandbox."""

    backend: str | None
    pool: LocalJailBackend | None
    victim: TransformedBundle
    baseline: dict[str, Any] = field(default_factory=dict)

    def invoke(
        self,
        bundle: TransformedBundle,
        tool: str,
        input: Any = None,
        *,
        org: str = ATTACKER,
        limits: Limits = FAST,
        env: dict[str, str] | None = None,
        egress: EgressPolicy | None = None,
        agent: str = "corpus",
    ) -> api.InvokeResult:
        """One call through the public API, as organization `org`."""
        return api.invoke(
            bundle,
            agent=agent,
            tool=tool,
            input={} if input is None else input,
            context={"sessionId": "corpus-session", "resourceId": org},
            env=dict(env or {}),
            egress=egress or EgressPolicy(),
            limits=limits,
            bundle_key=f"{org}:v1",
            backend=self.backend,
        )

    def victim_call(self, marker: str) -> dict[str, Any]:
        """The victim organization's probe of the state it starts from (must succeed)."""
        result = self.invoke(
            self.victim,
            "fingerprint",
            {"marker": marker},
            org=VICTIM,
            env=VICTIM_ENV,
            limits=Limits(cpu_ms=2000, wall_ms=5000),
        )
        assert result.ok, f"the victim's call failed: {result.error}"
        output: dict[str, Any] = result.output
        return output

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Every worker of the corpus pool alive and idle again (replacements started in the background)."""
        if self.pool is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.pool.status()
            if status["alive"] == self.pool.config.workers and status["idle"] == self.pool.config.workers:
                return
            assert time.monotonic() < deadline, f"the sandbox pool did not recover: {status}"
            time.sleep(0.02)

    def attack(
        self,
        bundle: TransformedBundle,
        tool: str,
        input: Any = None,
        *,
        errors: set[str] | None = None,
        harmless: Callable[[Any], object] | None = None,
        org: str = ATTACKER,
        limits: Limits = FAST,
        env: dict[str, str] | None = None,
        egress: EgressPolicy | None = None,
        agent: str = "corpus",
    ) -> api.InvokeResult:
        """Run one hostile call and assert the four parts; return the result for case-specific checks.

        `errors`: the error types that classify this attack; `harmless`: a check of a normal
        result (assert inside it, or return False) proving the attack did nothing.
        """
        assert (errors is None) != (harmless is None), "a case says either its errors or its harmless check"
        started = time.monotonic()
        result = self.invoke(bundle, tool, input, org=org, limits=limits, env=env, egress=egress, agent=agent)
        elapsed_s = time.monotonic() - started
        assert_classified(result, errors=errors, harmless=harmless)
        assert_within_limits(result, limits=limits, elapsed_s=elapsed_s, grace_ms=self.grace_ms)
        self.wait_healthy()
        self.assert_victim_unaffected(f"after {tool}")
        return result

    def assert_fresh_for(self, bundle: TransformedBundle, *, org: str = ATTACKER, wait_ms: int = 0) -> None:
        """`org`'s own next call of `bundle` (its `fingerprint` tool) starts from a fresh sandbox."""
        result = self.invoke(
            bundle, "fingerprint", {"waitMs": wait_ms}, org=org, limits=Limits(cpu_ms=2000, wall_ms=5000)
        )
        assert result.ok, f"{org}'s next call failed: {result.error}"
        ignored = {"echo": None, "env": None, "resourceId": None}
        assert {**result.output, **ignored} == {**self.baseline, **ignored}, _difference(
            self.baseline, result.output
        )

    def assert_victim_unaffected(self, marker: str) -> None:
        """The victim's next call (same worker where the pool has one) sees a fresh sandbox."""
        seen = self.victim_call(marker)
        assert seen["echo"] == {"marker": marker}
        assert seen["resourceId"] == VICTIM
        assert seen["env"] == VICTIM_ENV
        assert {**seen, "echo": None} == {**self.baseline, "echo": None}, _difference(self.baseline, seen)

    @property
    def grace_ms(self) -> int:
        return self.pool.config.grace_ms if self.pool is not None else 1000


def _difference(expected: dict[str, Any], seen: dict[str, Any]) -> str:
    changed = {
        key: seen.get(key)
        for key in set(expected) | set(seen)
        if key not in {"echo", "env", "resourceId"} and expected.get(key) != seen.get(key)
    }
    return f"the victim's state differs from a fresh sandbox: {json.dumps(changed, default=str)[:2000]}"


def assert_classified(
    result: api.InvokeResult,
    *,
    errors: set[str] | None = None,
    harmless: Callable[[Any], object] | None = None,
) -> None:
    """The call ended with one of the expected error types, or with a result proving nothing happened."""
    if errors is not None:
        assert not result.ok, (
            f"expected one of {sorted(errors)}, the call succeeded with {result.output!r:.500}"
        )
        assert result.error is not None
        assert set(result.error) == {"type", "message", "detail"}, result.error
        assert result.error["type"] in CODES, result.error
        assert result.error["type"] in errors, f"expected one of {sorted(errors)}, got {result.error!r:.1000}"
        assert isinstance(result.error["message"], str) and result.error["message"]
        assert isinstance(result.error["detail"], dict)
    if harmless is not None:
        assert result.ok, f"expected a harmless result, got {result.error!r:.1000}"
        assert harmless(result.output) is not False, f"the result shows an effect: {result.output!r:.1000}"


def assert_within_limits(
    result: api.InvokeResult, *, limits: Limits, elapsed_s: float, grace_ms: int
) -> None:
    """The call's own usage figures, logs, output and fetch count stay inside the call's limits."""
    assert elapsed_s < (limits.wall_ms + grace_ms) / 1000 + HOST_SLACK_S, (
        f"the call held its caller {elapsed_s:.1f} s"
    )
    usage = result.usage
    if result.error is not None and result.error["type"] == "cpu_limit":
        # A call ended by the CPU backstop must still meter what it spent.
        assert "cpu_ms" in usage, f"a cpu_limit call reported no cpu_ms: {usage}"
    if "cpu_ms" in usage:
        assert usage["cpu_ms"] <= limits.cpu_ms + CPU_BACKSTOP_MS + CPU_SLACK_MS, usage
    if not usage.get("host_enforced"):
        assert usage.get("wall_ms", 0) <= limits.wall_ms + WALL_SLACK_MS, usage
    if "peak_memory_bytes" in usage:
        assert usage["peak_memory_bytes"] <= limits.memory_mb * MIB, usage
    if "fetches" in usage:
        assert usage["fetches"] <= limits.max_fetches, usage
    log_bytes = sum(
        len(str(entry.get("message", "")).encode("utf-8", "surrogatepass")) for entry in result.logs
    )
    assert log_bytes <= limits.log_bytes + LOG_MARKER_BYTES, f"{log_bytes} bytes of logs"
    assert len(result.logs) <= limits.log_bytes, f"{len(result.logs)} log entries"
    if result.ok:
        size = len(
            json.dumps(result.output, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
        )
        assert size <= limits.output_bytes, f"{size} bytes of output"


def corpus_fixtures(name: str, tools: dict[str, str], *, top_level: str = "") -> tuple[Any, Any]:
    """A corpus module's `sandbox` and `bundle` fixtures (module-scoped): assign them in the module.

    `sandbox` is `corpus_sandbox(sandbox_backend, name)`; `bundle` holds every tool of `tools`.
    """

    @pytest.fixture(scope="module")
    def sandbox(sandbox_backend: str) -> Iterator[CorpusSandbox]:
        yield from corpus_sandbox(sandbox_backend, name)

    @pytest.fixture(scope="module")
    def bundle() -> TransformedBundle:
        return hostile_bundle(tools, top_level=top_level)

    return sandbox, bundle


def corpus_sandbox(sandbox_backend: str, name: str) -> Iterator[CorpusSandbox]:
    """The sandbox a corpus module runs on: a one-worker local pool, or the Docker backend."""
    victim = hostile_bundle(VICTIM_TOOLS)
    pool: LocalJailBackend | None = None
    backend: str | None = None
    if sandbox_backend == "local":
        pool = LocalJailBackend(PoolConfig(workers=1))
        backend = f"corpus-{name}"
        api.register_backend(backend, lambda: pool)  # type: ignore[arg-type,return-value]
    sandbox = CorpusSandbox(backend=backend, pool=pool, victim=victim)
    try:
        sandbox.baseline = sandbox.victim_call("baseline")
        yield sandbox
    finally:
        if pool is not None:
            pool.shutdown()
            api._BACKEND_FACTORIES.pop(str(backend), None)


class RecordingHandler(BaseHTTPRequestHandler):
    """An HTTP server that must never be reached by a denied fetch; it records every request."""

    seen: list[str] = []

    def log_message(self, *args: Any) -> None:
        return

    def _answer(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        # /redirect?[status=N&]to=URL, /loop (to itself), /hops/N (N more hops, then 200).
        if self.path.startswith("/redirect"):
            status = int(self.path.split("status=", 1)[1].split("&", 1)[0]) if "status=" in self.path else 302
            self._redirect(status, self.path.split("to=", 1)[1])
            return
        if self.path == "/loop":
            self._redirect(302, "/loop")
            return
        if self.path.startswith("/hops/") and int(self.path.rsplit("/", 1)[1]) > 0:
            self._redirect(302, f"/hops/{int(self.path.rsplit('/', 1)[1]) - 1}")
            return
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer  # noqa: N815


def recording_server() -> Iterator[tuple[int, type[RecordingHandler]]]:
    """Serve RecordingHandler on 127.0.0.1; yield its port and the handler class (with `seen`)."""
    handler = type("Recording", (RecordingHandler,), {"seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield httpd.server_address[1], handler
    finally:
        httpd.shutdown()
        httpd.server_close()
