"""Corpus, host bridges called with hostile arguments: everything the runtime gives JS that reaches the
engine loop, C or the host (fetch, timers, crypto, TextEncoder/Decoder, console, structuredClone,
URL, atob/btoa, Response). Every call ends classified within its limits, and the pool survives it.
"""

# ruff: noqa: E501 - the cases are JavaScript sources, kept one statement a line

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from execution.sandbox.egress import EgressPolicy
from tests.security.corpus import (
    FAST,
    CorpusSandbox,
    RecordingHandler,
    corpus_fixtures,
    recording_server,
)

SPIN = "() => { while (true) {} }"

# The harmless cases parse 100 KB URLs, build 20,000 headers, fill typed arrays: 90-170 ms of CPU on a
# quiet machine, and more than FAST's 400 ms once on a loaded CI machine (cpu_limit). Their point is a
# harmless report, not the limit, so they get room; the cases that must end at a limit keep FAST.
HARMLESS_LIMITS = dataclasses.replace(FAST, cpu_ms=2000, wall_ms=5000)

# name: (tool source, expected error types, or None when the tool returns a harmless report)
CASES: dict[str, tuple[str, set[str] | None]] = {
    # ---- fetch
    # The server refuses these (431) or the sandbox does (TypeError): either way a report comes back.
    "fetchHugeHeader": (
        """async ({ url }) => {
        try { return (await fetch(url, { headers: { 'x-big': 'a'.repeat(2000000) } })).status; } catch (e) { return e.name; } }""",
        None,
    ),
    "fetchManyHeaders": (
        """async ({ url }) => {
        const headers = {}; for (let i = 0; i < 20000; i++) headers['x-h' + i] = 'v';
        try { return (await fetch(url, { headers })).status; } catch (e) { return e.name; } }""",
        None,
    ),
    "fetchHeaderInjection": (
        """async ({ url }) => {
        const outcomes = [];
        for (const [k, v] of [["x-a", "1\\r\\nInjected: yes"], ["x-b\\r\\nInjected", "yes"], ["x-c", "1\\nInjected: yes"],
                              ["x-d", "1\\u0000Injected"], ["host", "evil.example"], ["transfer-encoding", "chunked"]]) {
          try { outcomes.push((await fetch(url, { headers: [[k, v]] })).status); } catch (e) { outcomes.push(e && e.name); }
        }
        return outcomes; }""",
        None,
    ),
    "fetchOddMethods": (
        """async ({ url }) => {
        const outcomes = [];
        for (const method of ["TRACE", "CONNECT", "TRACK", "GET\\r\\nInjected: yes", "", "a".repeat(100000), "G ET", "\\u0100"]) {
          try { outcomes.push((await fetch(url, { method })).status); } catch (e) { outcomes.push(e && e.name); }
        }
        return outcomes; }""",
        None,
    ),
    "fetchNonStringUrls": (
        """async () => {
        const outcomes = [];
        for (const input of [123, null, undefined, {}, [], true, () => 1, new Proxy({}, {}), Object.create(null)]) {
          try { await fetch(input); outcomes.push("fetched"); } catch (e) { outcomes.push(e && e.name); }
        }
        try { await fetch(Symbol("s")); outcomes.push("fetched"); } catch (e) { outcomes.push(e && e.name); }
        return outcomes; }""",
        None,
    ),
    "fetchUrlToStringThrows": (
        "async () => fetch({ toString() { throw new Error('boom from toString'); } })",
        {"tool_error"},
    ),
    "fetchUrlToStringSpins": (f"async () => fetch({{ toString: {SPIN} }})", {"cpu_limit", "timeout"}),
    "fetchInitGetterThrows": (
        "async ({ url }) => fetch(url, { get method() { throw new Error('getter'); } })",
        {"tool_error"},
    ),
    "fetchHeadersProxyThrows": (
        """async ({ url }) => fetch(url, { headers: new Proxy({}, {
        ownKeys() { throw new Error('trap'); }, get() { throw new Error('trap'); } }) })""",
        {"tool_error"},
    ),
    "fetchHugeBody": (
        "async ({ url }) => (await fetch(url, { method: 'POST', body: 'x'.repeat(2 * 1024 * 1024) })).status",
        # Encoding 2 MB for the request is CPU work too: in a CPU-capped container it can end there.
        {"tool_error", "egress_denied", "memory_limit", "cpu_limit"},
    ),
    "fetchBodyKinds": (
        """async ({ url }) => {
        const outcomes = [];
        for (const body of [{ toString() { throw new Error('b'); } }, Symbol('s'), new Proxy({}, { get() { throw new Error('p'); } }),
                            new Uint8Array(16), new ArrayBuffer(8), new DataView(new ArrayBuffer(4)), 123n]) {
          try { outcomes.push((await fetch(url, { method: 'POST', body })).status); } catch (e) { outcomes.push(e && e.name); }
        }
        return outcomes; }""",
        None,
    ),
    "fetchHugeUrl": (
        "async ({ url }) => (await fetch(url + '?q=' + 'a'.repeat(4 * 1024 * 1024))).status",
        # Parsing a 4 MB URL is CPU work too: on a slow machine the call can end at the CPU limit
        # (seen once in CI on a machine at half its usual speed).
        {"egress_denied", "tool_error", "memory_limit", "cpu_limit"},
    ),
    "fetchResponseAbuse": (
        """async ({ url }) => {
        const r = await fetch(url);
        const outcomes = [];
        for (const f of [() => r.text(), () => r.text(), () => r.json(), () => r.arrayBuffer(), () => r.clone()]) {
          try { await f(); outcomes.push("ok"); } catch (e) { outcomes.push(e && e.name); }
        }
        return outcomes; }""",
        None,
    ),
    # ---- timers
    "timerOddDelays": (
        """async () => {
        const delays = [NaN, -1, -Infinity, "abc", null, {}, [], "10", -0, 0.0001];
        const fired = await Promise.all(delays.map((d) => new Promise((r) => setTimeout(() => r(true), d))));
        return fired.every(Boolean); }""",
        None,
    ),
    "timerHugeDelays": (
        """async () => {
        const outcomes = [];
        for (const d of [Infinity, 1e308, 2 ** 53, 2 ** 31, Number.MAX_VALUE]) {
          const huge = new Promise((r) => setTimeout(() => r("fired"), d));
          const short = new Promise((r) => setTimeout(() => r("short"), 5));
          outcomes.push(await Promise.race([huge, short]));
        }
        return outcomes; }""",
        None,
    ),
    "timerDelayValueOfThrows": (
        "() => setTimeout(() => {}, { valueOf() { throw new Error('delay'); } })",
        {"tool_error"},
    ),
    "timerDelayValueOfSpins": (
        f"() => setTimeout(() => {{}}, {{ valueOf: {SPIN} }})",
        {"cpu_limit", "timeout"},
    ),
    "timerStringCallback": (
        """() => {
        const outcomes = [];
        for (const cb of ["globalThis.evaluated = 1", null, 42, {}]) {
          try { setTimeout(cb, 0); outcomes.push("accepted"); } catch (e) { outcomes.push(e && e.name); }
          try { setInterval(cb, 0); outcomes.push("accepted"); } catch (e) { outcomes.push(e && e.name); }
        }
        return outcomes; }""",
        None,
    ),
    "timerClearOddIds": (
        """() => {
        for (const id of [NaN, -1, Infinity, null, undefined, {}, "1", 2 ** 60]) { clearTimeout(id); clearInterval(id); }
        return "cleared"; }""",
        None,
    ),
    "timerClearIdValueOfSpins": (f"() => clearTimeout({{ valueOf: {SPIN} }})", {"cpu_limit", "timeout"}),
    "timerZeroIntervalChurn": (
        """() => new Promise((resolve) => {
        let n = 0; const id = setInterval(() => { n++; if (n === 100) { clearInterval(id); resolve(n); } }, 0); })""",
        None,
    ),
    # ---- crypto
    "cryptoHostileArrays": (
        """() => {
        const outcomes = [];
        const inputs = [() => new Uint8Array(1e6), () => new Uint32Array(1e7), () => new Float64Array(8), () => null, () => ({ length: 8 }),
                        () => new DataView(new ArrayBuffer(8)), () => new Proxy(new Uint8Array(8), {}), () => new BigUint64Array(4),
                        () => new Uint8Array(0), () => new Uint8Array(65536), () => new Uint8Array(65537)];
        for (const make of inputs) {
          try { const a = make(); crypto.getRandomValues(a); outcomes.push("filled"); } catch (e) { outcomes.push(e && e.name); }
        }
        return outcomes; }""",
        None,
    ),
    "cryptoUuidFlood": (
        "() => { const s = new Set(); for (let i = 0; i < 2000; i++) s.add(crypto.randomUUID()); return s.size; }",
        None,
    ),
    # ---- TextEncoder / TextDecoder
    "textEncodeGiant": (
        "() => new TextEncoder().encode('x'.repeat(64 * 1024 * 1024)).length",
        {"memory_limit"},
    ),
    "textDecodeGiant": (
        "() => new TextDecoder().decode(new Uint8Array(40 * 1024 * 1024)).length",
        {"memory_limit", "cpu_limit", "timeout"},
    ),
    "textOddInputs": (
        """() => {
        const outcomes = [];
        const tries = [
          () => new TextEncoder().encode("\\ud800\\udfff\\ud800").length,
          () => new TextEncoder().encode({ toString() { throw new Error('t'); } }),
          () => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xff, 0xfe])),
          () => new TextDecoder({ toString() { throw new Error('label'); } }),
          () => new TextDecoder("x".repeat(1e6)),
          () => new TextDecoder().decode(new Proxy(new Uint8Array(4), {})),
          () => new TextDecoder().decode({ byteLength: 1e9 }),
          () => new TextEncoder().encodeInto("abc", new Uint8Array(1)),
          () => atob("!!!not base64"),
          () => btoa("\\u0100"),
          () => atob("A".repeat(4 * 1024 * 1024)).length,
        ];
        for (const f of tries) { try { const v = f(); outcomes.push(typeof v); } catch (e) { outcomes.push(e && e.name); } }
        return outcomes; }""",
        None,
    ),
    # ---- console
    "consoleCyclic": (
        "() => { const a = { n: 1 }; a.self = a; a.list = [a, [a]]; console.log(a); console.dir(a); console.table(a); return 'logged'; }",
        None,
    ),
    "consoleProxyThrows": (
        """() => {
        const p = new Proxy({}, { get() { throw new Error('get'); }, ownKeys() { throw new Error('keys'); },
                                  getPrototypeOf() { throw new Error('proto'); }, has() { throw new Error('has'); } });
        const { proxy, revoke } = Proxy.revocable({}, {}); revoke();
        console.log(p, proxy, [p], { p });
        console.error(p); console.warn(proxy);
        return 'logged'; }""",
        None,
    ),
    "consoleGettersThrow": (
        """() => {
        const o = { get boom() { throw new Error('getter'); }, get message() { throw new Error('m'); } };
        const e = new Error('x'); Object.defineProperty(e, 'message', { get() { throw new Error('msg'); } });
        console.log(o, e, { nested: o });
        return 'logged'; }""",
        None,
    ),
    "consoleProxySpins": (
        f"() => {{ console.log(new Proxy({{}}, {{ ownKeys: {SPIN} }})); return 'logged'; }}",
        {"cpu_limit", "timeout"},
    ),
    "consoleGetterSpins": (
        "() => { console.log({ get slow() { while (true) {} } }); return 'logged'; }",
        {"cpu_limit", "timeout"},
    ),
    "consoleHostileLabels": (
        """() => {
        const outcomes = [];
        const labels = [{ toString() { throw new Error('label'); } }, Symbol('s'), null, {}, "x".repeat(100000)];
        for (const label of labels) {
          for (const f of [console.count, console.countReset, console.time, console.timeEnd, console.timeLog]) {
            try { f(label); outcomes.push("ok"); } catch (e) { outcomes.push(e && e.name); }
          }
        }
        try { console.assert(false, { toString() { throw new Error('a'); } }); outcomes.push("ok"); } catch (e) { outcomes.push(e && e.name); }
        return outcomes.length; }""",
        None,
    ),
    "consoleHugeArray": (
        "() => { console.log(new Array(1e6).fill('abc')); console.log(new Uint8Array(1e6)); return 'logged'; }",
        None,
    ),
    # ---- structuredClone, URL, Response
    "structuredCloneHostile": (
        """() => {
        const outcomes = [];
        const a = { x: 1 }; a.self = a;
        const inputs = [a, new Proxy({}, { get() { throw new Error('p'); } }), () => 1, Symbol('s'),
                        { get boom() { throw new Error('g'); } }, new Array(100000).fill({ a: 1 })];
        for (const v of inputs) { try { structuredClone(v); outcomes.push("cloned"); } catch (e) { outcomes.push(e && e.name); } }
        return outcomes; }""",
        None,
    ),
    "urlHostile": (
        """() => {
        const outcomes = [];
        const tries = [
          () => new URLSearchParams("a=1&".repeat(20000)).getAll("a").length,
          () => new URL("http://x/" + "a/".repeat(50000)).pathname.length,
          () => new URL({ toString() { throw new Error('u'); } }),
          () => new URL("http://x", { toString() { throw new Error('base'); } }),
          () => new URL("http://[" + ":".repeat(100000) + "]"),
          () => new URLSearchParams({ get a() { throw new Error('q'); } }),
          () => new URL("http://x/%" + "%".repeat(100000)).href.length,
        ];
        for (const f of tries) { try { f(); outcomes.push("ok"); } catch (e) { outcomes.push(e && e.name); } }
        return outcomes; }""",
        None,
    ),
    "responseHostile": (
        """async () => {
        const outcomes = [];
        const tries = [
          () => new Response("x".repeat(512 * 1024)).text().then((t) => t.length),
          () => new Response("{").json(),
          () => new Response(null, { status: 99 }),
          () => new Response(null, { headers: { "a\\r\\nb": "c" } }),
          () => new Request("http://x", { method: "GET", body: "b" }),
          () => Response.json(undefined),
          () => Response.redirect("http://127.0.0.1/", 302).headers.get("location"),
        ];
        for (const f of tries) { try { await f(); outcomes.push("ok"); } catch (e) { outcomes.push(e && e.name); } }
        return outcomes; }""",
        None,
    ),
    "queueMicrotaskHostile": (
        """async () => {
        const outcomes = [];
        for (const cb of [null, "code", {}, () => { throw { toString() { while (true) {} } }; }]) {
          try { queueMicrotask(cb); outcomes.push("queued"); } catch (e) { outcomes.push(e && e.name); }
        }
        process.nextTick(() => { throw new Error('tick'); });
        await null; await null;
        return outcomes; }""",
        None,
    ),
}

TOOLS = {name: source for name, (source, _) in CASES.items()}


# Module-scoped fixtures: `sandbox` (a one-worker pool, or Docker) and `bundle` (every tool of TOOLS).
sandbox, bundle = corpus_fixtures("bridges", TOOLS)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, type[RecordingHandler]]]:
    """An allow-listed server, so fetches with hostile arguments go the whole way to the host."""
    yield from recording_server()


def _no_injection(handler: type[RecordingHandler]) -> None:
    for line in handler.seen:
        assert "Injected" not in line, handler.seen
        method = line.split(" ", 1)[0]
        assert method in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}, handler.seen


@pytest.mark.parametrize("tool", sorted(CASES))
def test_bridge_called_with_hostile_arguments(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]], tool: str
) -> None:
    port, handler = server
    handler.seen.clear()
    errors = CASES[tool][1]
    egress = EgressPolicy(allow_hosts=["localhost"], unsafe_allow_loopback_for_tests=True)
    url = f"http://localhost:{port}/bridge"
    if errors is None:
        result = sandbox.attack(
            bundle,
            tool,
            {"url": url},
            egress=egress,
            limits=HARMLESS_LIMITS,
            harmless=lambda out: out is not None,
        )
    else:
        result = sandbox.attack(bundle, tool, {"url": url}, egress=egress, errors=errors)
    _no_injection(handler)
    output = result.output
    if tool == "fetchHeaderInjection":
        # Line breaks and NULs never reach the wire; framing headers are the host's.
        assert all(o == "TypeError" or o == 200 for o in output), output
    if tool == "fetchOddMethods":
        assert "TypeError" in output and output.count(200) <= 1, output
    if tool == "fetchNonStringUrls":
        assert "fetched" not in output, output
    if tool == "timerOddDelays":
        assert output is True
    if tool == "timerHugeDelays":
        assert output == ["short"] * 5, output
    if tool == "timerStringCallback":
        assert "accepted" not in output, output
    if tool == "cryptoHostileArrays":
        assert output[0] == "QuotaExceededError" and output[1] == "QuotaExceededError", output
        assert output[2] == "TypeMismatchError" or output[2] == "TypeError", output
        assert output[9] == "filled" and output[10] == "QuotaExceededError", output
    if tool in {"fetchHugeHeader", "fetchManyHeaders"}:
        assert output in {400, 413, 431, "TypeError"}, output
    if tool == "cryptoUuidFlood":
        assert output == 2000
    if tool.startswith("console") and errors is None:
        size = sum(len(entry["message"]) for entry in result.logs)
        assert size <= FAST.log_bytes + 200
    if tool == "consoleCyclic":
        assert "[Circular]" in result.logs[0]["message"], result.logs
