"""Sandbox side of forged replies: bundle code cannot forge the runtime's replies to the engine.

Bundle code shares the JS heap with the runtime and can rewrite every built-in prototype before a
reply is written (Object.prototype.toJSON, index accessors on Array.prototype, iterators,
String/RegExp/Function/Promise methods, Symbol.species, proxies). Each test below runs a bundle
that does so, through the public api on the native and the Python runner, and asserts the result
is exactly what an honest runtime reports: the tool's own output and log lines, the error type
from the runtime's closed set, max_fetches, the log byte limit and the nesting limit enforced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.limits import Limits
from execution.sandbox.pool import LocalJailBackend, PoolConfig
from execution.sandbox.transform import transform

CONTEXT = {"sessionId": "session-replies", "resourceId": "org_replies"}
LIMITS = Limits(cpu_ms=3000, wall_ms=8000)

HEAD = """
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
const deep = (n) => { let v = "leaf"; for (let i = 0; i < n; i++) v = [v]; return v; };
const forged = () => ({
  ok: false, done: true, output: "forged", fetches: [],
  error: { type: "quota_exceeded", message: "forged by the bundle", detail: { nested: deep(3000) } },
  logs: [{ level: "log", message: "x".repeat(16 * 1024 * 1024) }, deep(3000)],
  usage: { fetches: 0 }, manifest: { agents: 5 }, issues: "forged",
});
const forgeToJSON = () => {
  Object.prototype.toJSON = forged;
  Array.prototype.toJSON = forged;
  String.prototype.toJSON = forged;
  Number.prototype.toJSON = forged;
  Boolean.prototype.toJSON = forged;
};
"""

TAIL = """
export default createLightfast({
  agents: { a: createAgent({ name: "a", model: "demo", tools: {
    t: createTool({ description: "the tool", inputSchema: SCHEMA, execute: async (input) => { BODY } }),
  } }) },
  metadata: { name: "replies", version: "1.0.0", description: "hostile replies" },
});
AFTER
"""


def _source(body: str, *, after: str = "", schema: str = "z.object({}).passthrough()") -> str:
    return HEAD + TAIL.replace("SCHEMA", schema).replace("BODY", body).replace("AFTER", after)


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = {"method": self.command, "path": self.path, "headers": headers, "body": body}
        _Recorder.received.append(record)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    """An HTTP server on the host's loopback that records what reached it (through egress)."""
    _Recorder.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _loopback() -> EgressPolicy:
    return EgressPolicy(allow_hosts=["127.0.0.1"], unsafe_allow_loopback_for_tests=True)


@pytest.fixture(scope="module")
def _pools() -> Iterator[dict[str, LocalJailBackend]]:
    pools: dict[str, LocalJailBackend] = {}
    yield pools
    for pool in pools.values():
        pool.shutdown()


Invoke = Callable[..., api.InvokeResult]


@pytest.fixture(params=["native", "python"])
def backend(request: pytest.FixtureRequest, sandbox_backend: str, _pools: dict[str, LocalJailBackend]) -> str:
    """The api backend name running the requested runner (docker containers run the native one)."""
    runner = request.param
    if sandbox_backend != "local":
        if runner == "python":
            pytest.skip(reason="docker containers run the native runner; the Python one is tested locally")
        return sandbox_backend
    name = f"replies-{runner}"
    if name not in _pools:
        _pools[name] = LocalJailBackend(PoolConfig(workers=1, runner=runner))
        api.register_backend(name, lambda pool=_pools[name]: pool)
    return name


@pytest.fixture
def run(backend: str) -> Invoke:
    def invoke(
        body: str,
        *,
        after: str = "",
        schema: str = "z.object({}).passthrough()",
        tool: str = "t",
        input: Any = None,  # noqa: A002 - the api's name
        limits: Limits = LIMITS,
        egress: EgressPolicy | None = None,
    ) -> api.InvokeResult:
        bundle = transform(_source(body, after=after, schema=schema).encode())
        return api.invoke(
            bundle,
            agent="a",
            tool=tool,
            input={} if input is None else input,
            context=CONTEXT,
            env={},
            egress=egress or EgressPolicy(),
            limits=limits,
            bundle_key="org_replies:v1",
            backend=backend,
        )

    return invoke


def _assert_usage(result: api.InvokeResult, fetches: int = 0) -> None:
    # load_cpu_ms: present on the call that loaded the bundle first (its top-level code's CPU).
    assert set(result.usage) - {"load_cpu_ms"} == {"cpu_ms", "wall_ms", "peak_memory_bytes", "fetches"}, (
        result.usage
    )
    assert result.usage["fetches"] == fetches, result.usage


def _logs_json_bytes(logs: list[Any]) -> int:
    return len(json.dumps(logs, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# ------------------------------------------------------------------ the result envelope


def test_tojson_on_prototypes_cannot_forge_a_successful_result(run: Invoke) -> None:
    result = run('forgeToJSON(); console.log("honest line"); return 7;')
    assert result.ok, result.error
    assert result.output == 7 and result.error is None
    assert result.logs == [{"level": "log", "message": "honest line"}]
    _assert_usage(result)


def test_tojson_on_prototypes_cannot_forge_an_error(run: Invoke) -> None:
    result = run('forgeToJSON(); console.warn("before"); throw new Error("boom");')
    assert not result.ok
    assert result.error is not None
    assert result.error["type"] == "tool_error"
    assert result.error["message"] == "boom"
    # `at` is the host's: the upload position of the stack's top bundle frame (execution/sandbox/locate.py;
    # the native runner names the bundle's frames, the Python runner cannot).
    assert set(result.error["detail"]) <= {"name", "stack", "at"}
    assert result.error["detail"]["name"] == "Error"
    assert set(result.error["detail"].get("at", {"line": 0, "column": 0})) == {"line", "column"}
    assert result.logs == [{"level": "warn", "message": "before"}]
    _assert_usage(result)


def test_tojson_installed_at_load_time_cannot_forge_a_result(run: Invoke) -> None:
    result = run("return 1;", after="forgeToJSON();")
    assert result.ok and result.output == 1 and result.logs == [], result.to_dict()
    _assert_usage(result)


@pytest.mark.parametrize(
    "thrown",
    [
        '{ type: "quota_exceeded", message: "host only" }',
        'Object.assign(new Error("host only"), { type: "quota_exceeded", code: "quota_exceeded" })',
        'Object.assign(new Error("out of memory"), { name: "InternalError" })',
        'Object.assign(new Error("Maximum call stack size exceeded"), { name: "RangeError" })',
        'new Proxy(new RangeError("x"), { get: (t, k) => k === "message" ? "Maximum call stack size exceeded"'
        ' : t[k], getOwnPropertyDescriptor: () => ({ value: "Maximum call stack size exceeded",'
        " configurable: true }) })",
    ],
    ids=["plain-object", "error-with-type", "fake-oom", "fake-stack-overflow", "proxy-stack-overflow"],
)
def test_a_thrown_value_cannot_choose_its_error_type(run: Invoke, thrown: str) -> None:
    result = run(f"forgeToJSON(); throw {thrown};")
    assert not result.ok
    assert result.error is not None and result.error["type"] == "tool_error", result.error
    _assert_usage(result)


def test_object_prototype_setters_cannot_capture_reply_fields(run: Invoke) -> None:
    body = """
      const sink = [];
      for (const key of ["ok", "type", "message", "detail", "level", "logs", "error", "output", "done",
                         "fetches", "id", "request", "url", "code", "0", "1", "length"]) {
        Object.defineProperty(Object.prototype, key, {
          configurable: true, get() { return "forged"; }, set(v) { sink.push(v); },
        });
      }
      for (let i = 0; i < 4; i++) {
        Object.defineProperty(Array.prototype, String(i), {
          configurable: true,
          get() { return '"},{"level":"error","message":"forged'; },
          set(v) { sink.push(v); },
        });
      }
      console.log("a");
      console.log("b");
      const out = Object.create(null);
      out.kept = "yes";
      return out;
    """
    result = run(body)
    assert result.ok, result.error
    assert result.output == {"kept": "yes"}
    assert result.logs == [{"level": "log", "message": "a"}, {"level": "log", "message": "b"}]
    _assert_usage(result)


def test_replaced_builtin_methods_do_not_steer_the_runtime(run: Invoke) -> None:
    body = """
      const nope = () => { throw new Error("the runtime called a replaced built-in"); };
      const wait = new Promise((resolve) => setTimeout(() => resolve(true), 5));
      const replace = (proto, names) => {
        for (let i = 0; i < names.length; i++) {
          Object.defineProperty(proto, names[i], { value: nope, configurable: true, writable: true });
        }
      };
      // Iteration and calls of the test itself are done before their own built-ins go.
      replace(String.prototype, ["slice", "replace", "replaceAll", "indexOf", "toLowerCase", "toUpperCase",
                                 "charCodeAt", "split", "trim", "startsWith", Symbol.replace, Symbol.split]);
      replace(RegExp.prototype, ["exec", "test", Symbol.replace, Symbol.match, Symbol.split]);
      replace(Object.getPrototypeOf(new Map().entries()), ["next"]);
      replace(Map.prototype, ["get", "set", "has", "delete", "entries", "values", "keys", Symbol.iterator]);
      replace(Set.prototype, ["add", "has", "delete"]);
      replace(Promise.prototype, ["then", "catch", "finally"]);
      replace(Array.prototype, ["push", "join", "sort", "map", "slice", "filter", "concat", Symbol.iterator]);
      replace(Function.prototype, ["call", "apply", "bind"]);
      Object.defineProperty(Map.prototype, "size", { get: nope, configurable: true });
      Object.defineProperty(Array, Symbol.species, { get: nope, configurable: true });
      Array.prototype.constructor = { [Symbol.species]: function () { nope(); } };
      Object.keys = nope; JSON.stringify = nope; JSON.parse = nope;
      String = nope; Number = nope; Math.max = nope;
      console.log("done", 1);
      const waited = await wait;
      return { a: 1, waited };
    """
    result = run(body)
    assert result.ok, result.error
    assert result.output == {"a": 1, "waited": True}
    assert result.logs == [{"level": "log", "message": "done 1"}]
    _assert_usage(result)


def test_proxies_as_output(run: Invoke) -> None:
    proxy = (
        "new Proxy({}, { ownKeys: () => ['a'], get: () => 1,"
        " getOwnPropertyDescriptor: () => ({ value: 1, enumerable: true, configurable: true }) })"
    )
    result = run(f"forgeToJSON(); delete Object.prototype.toJSON; return {proxy};")
    assert result.ok and result.output == {"a": 1}, result.to_dict()

    revoked = run("const r = Proxy.revocable({}, {}); r.revoke(); return { inner: r.proxy };")
    assert not revoked.ok
    assert revoked.error is not None and revoked.error["type"] == "tool_error"
    assert revoked.error["message"].startswith("the output could not be converted to JSON: ")
    _assert_usage(revoked)


def test_error_prototype_getters_do_not_change_the_error(run: Invoke) -> None:
    body = """
      for (const key of ["message", "stack", "name", "toString", "type"]) {
        const get = () => ({ type: "quota_exceeded" });
        try { Object.defineProperty(Error.prototype, key, { get }); } catch {}
      }
      Error.prototype.type = "quota_exceeded";
      throw new TypeError("typed boom");
    """
    result = run(body)
    assert not result.ok
    assert result.error is not None
    assert result.error["type"] == "tool_error"
    assert result.error["message"] == "typed boom"
    assert result.error["detail"]["name"] == "TypeError"


# ------------------------------------------------------------------ limits the runtime enforces


def test_nesting_is_bounded(run: Invoke) -> None:
    result = run(
        "forgeToJSON(); console.log(deep(3000));"
        " delete Object.prototype.toJSON; delete Array.prototype.toJSON; return deep(3000);"
    )
    assert not result.ok
    assert result.error is not None and result.error["type"] == "output_limit"
    assert len(result.logs) == 1
    entry = result.logs[0]
    assert set(entry) == {"level", "message"} and isinstance(entry["message"], str)
    _assert_usage(result)


@pytest.mark.parametrize(
    "flood",
    [
        'for (let i = 0; i < 100; i++) console.log("z".repeat(1000));',
        'for (let i = 0; i < 20000; i++) console.log("");',
        'for (let i = 0; i < 100; i++) console.log("\\u20ac".repeat(1000));',
        'for (let i = 0; i < 100; i++) console.log("\\u0001\\n".repeat(500));',
    ],
    ids=["ascii", "empty-lines", "multibyte", "escaped"],
)
def test_log_limit_is_enforced_in_bytes(run: Invoke, flood: str) -> None:
    log_bytes = 10_000
    limits = Limits(cpu_ms=3000, wall_ms=8000, log_bytes=log_bytes)
    result = run(f"forgeToJSON(); {flood} return 1;", limits=limits)
    assert result.ok and result.output == 1, result.error
    marker = {"level": "warn", "message": f"[logs truncated: limit of {log_bytes} bytes reached]"}
    assert result.logs[-1] == marker
    assert marker not in result.logs[:-1]
    assert all(set(e) == {"level", "message"} and e["level"] == "log" for e in result.logs[:-1])
    assert _logs_json_bytes(result.logs[:-1]) <= log_bytes
    _assert_usage(result)


def test_max_fetches_is_enforced(run: Invoke, recorder: int) -> None:
    body = f"""
      forgeToJSON();
      const url = "http://127.0.0.1:{recorder}/n";
      const settled = await Promise.allSettled(Array.from({{ length: 12 }}, (_, i) => fetch(url + i)));
      const ok = settled.filter((s) => s.status === "fulfilled").length;
      const limited = settled.filter(
        (s) => s.status === "rejected" && /fetch limit reached/.test(s.reason.message)).length;
      return ok + "/" + limited;
    """
    result = run(body, limits=Limits(cpu_ms=3000, wall_ms=8000, max_fetches=5), egress=_loopback())
    assert result.ok, result.error
    assert result.output == "5/7"
    assert len(_Recorder.received) == 5
    _assert_usage(result, fetches=5)


def test_fetch_limit_holds_against_reentrant_fetches(run: Invoke, recorder: int) -> None:
    # A replaced URL getter calls fetch() again while the runtime builds a request.
    body = f"""
      const url = "http://127.0.0.1:{recorder}/r";
      const inner = [];
      const href = Object.getOwnPropertyDescriptor(URL.prototype, "href").get;
      Object.defineProperty(URL.prototype, "href", {{ configurable: true, get() {{
        if (inner.length < 20) inner.push(fetch(url).then(() => "ok", (e) => e.message));
        return href.call(this);
      }} }});
      const outer = await fetch(url).then(() => "ok", (e) => e.message);
      const all = [outer, ...(await Promise.all(inner))];
      return all.filter((m) => m === "ok").length;
    """
    result = run(body, limits=Limits(cpu_ms=3000, wall_ms=8000, max_fetches=3), egress=_loopback())
    assert result.ok, result.error
    assert result.output == 3
    assert len(_Recorder.received) == 3
    _assert_usage(result, fetches=3)


def test_fetch_frames_are_checked_at_the_boundary(run: Invoke, recorder: int) -> None:
    body = f"""
      const base = "http://127.0.0.1:{recorder}/";
      const attempt = async (setup, request) => {{
        const undo = setup();
        try {{ await request(); return "sent"; }} catch (e) {{ return e.message; }} finally {{ undo(); }}
      }};
      const swap = (proto, key, descriptor) => () => {{
        const old = Object.getOwnPropertyDescriptor(proto, key);
        Object.defineProperty(proto, key, {{ ...descriptor, configurable: true }});
        return () => Object.defineProperty(proto, key, old);
      }};
      const both = (...setups) => () => {{
        const undos = setups.map((s) => s());
        return () => undos.reverse().forEach((u) => u());
      }};
      const results = [];
      // The URL parser made to accept a file: URL.
      results.push(await attempt(both(
        swap(URL.prototype, "href", {{ get() {{ return "file:///etc/passwd"; }} }}),
        swap(URL.prototype, "protocol", {{ get() {{ return "http:"; }} }}),
      ), () => fetch(base)));
      // Header validation bypassed: a header name with CRLF stored by a replaced Map.prototype.set.
      const realSet = Map.prototype.set;
      results.push(await attempt(swap(Map.prototype, "set", {{ value(k, v) {{
        return realSet.call(this, typeof k === "string" && k === "x-a" ? "x-a\\r\\ninjected: 1" : k, v);
      }} }}), () => fetch(base, {{ headers: {{ "x-a": "1" }} }})));
      // A method made of anything by replaced String and RegExp methods.
      const realTest = RegExp.prototype.test;
      results.push(await attempt(both(
        swap(String.prototype, "toUpperCase", {{ value() {{ return "GET /x HTTP/1.1\\r\\nHost"; }} }}),
        swap(RegExp.prototype, "test", {{ value(s) {{
          return String(s).includes("HTTP/1.1") ? true : realTest.call(this, s);
        }} }}),
      ), () => fetch(base, {{ method: "get" }})));
      // A body over the limit whose length getter says 0.
      const ta = Object.getPrototypeOf(Uint8Array.prototype);
      results.push(await attempt(swap(ta, "length", {{ get() {{ return 0; }} }}),
        () => fetch(base, {{ method: "POST", body: new Uint8Array(2000) }})));
      // An honest request still goes out as it should, toJSON forged or not.
      forgeToJSON();
      const init = {{ method: "PUT", headers: {{ "X-Kept": "v" }}, body: "hi" }};
      results.push(await attempt(() => () => {{}}, () => fetch(base + "honest", init)));
      delete Object.prototype.toJSON; delete Array.prototype.toJSON; delete String.prototype.toJSON;
      return results;
    """
    limits = Limits(cpu_ms=3000, wall_ms=8000, fetch_request_bytes=1000)
    result = run(body, limits=limits, egress=_loopback())
    assert result.ok, result.error
    assert result.output == [
        # The runtime re-reads the request's private URL with accessors captured at startup, so the
        # replaced getters are caught before the boundary check (which also refuses file:).
        "only http and https URLs can be fetched, not file:",
        "invalid header name",
        "invalid request method",
        "request body is larger than 1000 bytes",
        "sent",
    ]
    assert len(_Recorder.received) == 1
    honest = _Recorder.received[0]
    assert honest["method"] == "PUT" and honest["path"] == "/honest" and honest["body"] == b"hi"
    assert honest["headers"]["x-kept"] == "v" and not any("injected" in k for k in honest["headers"])
    _assert_usage(result, fetches=1)


# ------------------------------------------------------------------ details and the manifest


def test_error_details_are_the_runtimes(run: Invoke) -> None:
    unknown = run("return 1;", after="forgeToJSON();", tool="nope")
    assert not unknown.ok and unknown.error is not None
    assert unknown.error["type"] == "unknown_tool"
    assert unknown.error["detail"] == {"tools": ["t"]}

    invalid = run("return 1;", after="forgeToJSON();", schema="z.object({ n: z.number() })", input={"n": "x"})
    assert not invalid.ok and invalid.error is not None
    assert invalid.error["type"] == "invalid_input"
    issues = invalid.error["detail"]["issues"]
    assert isinstance(issues, list) and issues[0]["path"] == ["n"] and issues[0]["code"] == "invalid_type"


def test_manifest_cannot_be_forged(backend: str) -> None:
    honest = api.introspect(transform(_source("return 1;").encode()), backend=backend)
    tampered_source = _source(
        "return 1;",
        after="forgeToJSON(); String = () => ({ provider: 1 }); Set.prototype.has = () => false;"
        " Array.prototype.push = function () { return 0; };",
    )
    tampered = api.introspect(transform(tampered_source.encode()), backend=backend)
    for manifest in (honest, tampered):
        manifest.pop("sha256")
        manifest.pop("bytes")
    assert tampered == honest
    agent = honest["agents"]["a"]
    assert agent["model"] == {"provider": "demo", "id": "demo"}
    assert agent["tools"]["t"]["description"] == "the tool"
    assert honest["metadata"] == {"name": "replies", "version": "1.0.0", "description": "hostile replies"}
