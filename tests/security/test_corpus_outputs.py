"""Corpus, outputs the host cannot serialize: cycles, BigInt, Symbols, functions, proxies, lone surrogates,
NUL, non-finite numbers, deep nesting, huge values, throwing getters and toJSON, forged error types.
Each ends as a classified error or as plain JSON every host path can store (strict UTF-8, no NUL).
"""

# ruff: noqa: E501 - the cases are JavaScript sources, kept one statement a line

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from execution.sandbox import api
from tests.security.corpus import CorpusSandbox, corpus_fixtures

SPIN = "() => { while (true) {} }"

# name: (tool source, expected error types or None, expected output when None)
CASES: dict[str, tuple[str, set[str] | None, Any]] = {
    "cyclic": ("() => { const a = { n: 1 }; a.self = a; return a; }", None, {"n": 1, "self": "[Circular]"}),
    "cyclicThroughArray": (
        "() => { const a = [1]; a.push({ back: a }); return a; }",
        None,
        [1, {"back": "[Circular]"}],
    ),
    "bigint": ("() => ({ big: 10n, huge: 2n ** 200n })", None, {"big": "10", "huge": str(2**200)}),
    "symbolsAndFunctions": (
        "() => ({ s: Symbol('s'), f: () => 1, u: undefined, [Symbol('k')]: 1, list: [Symbol('s'), () => 1, undefined] })",
        None,
        {"list": [None, None, None]},
    ),
    "transparentProxy": ("() => new Proxy({ a: 1, b: [2] }, {})", None, {"a": 1, "b": [2]}),
    "nonFiniteNumbers": (
        "() => ({ negZero: -0, nan: NaN, inf: Infinity, ninf: -Infinity, list: [NaN, -0] })",
        None,
        {"negZero": 0, "nan": None, "inf": None, "ninf": None, "list": [None, 0]},
    ),
    "odditiesOfJSON": (
        """() => ({ date: new Date(0), bad: new Date(NaN), map: new Map([[1, 2]]), set: new Set([1]),
        typed: new Uint8Array([1, 2]), regexp: /x/g, error: new Error('e'), buffer: new ArrayBuffer(2),
        proto: JSON.parse('{"__proto__": {"polluted": 1}}'), nullProto: Object.assign(Object.create(null), { a: 1 }) })""",
        None,
        {
            "date": "1970-01-01T00:00:00.000Z",
            "bad": None,
            "map": {},
            "set": {},
            "typed": [1, 2],
            "regexp": {},
            "error": {},
            "buffer": {},
            "proto": {"__proto__": {"polluted": 1}},
            "nullProto": {"a": 1},
        },
    ),
    "thenableOutput": ("() => ({ then(resolve) { resolve({ settled: true }); } })", None, {"settled": True}),
    "revokedProxy": (
        "() => { const { proxy, revoke } = Proxy.revocable({ a: 1 }, {}); revoke(); return proxy; }",
        {"tool_error"},
        None,
    ),
    "proxyTrapsThrow": (
        "() => new Proxy({ a: 1 }, { get() { throw new Error('get trap'); }, ownKeys() { throw new Error('keys'); } })",
        {"tool_error"},
        None,
    ),
    "proxyTrapsSpin": (f"() => new Proxy({{ a: 1 }}, {{ ownKeys: {SPIN} }})", {"cpu_limit", "timeout"}, None),
    "getterThrows": ("() => ({ get boom() { throw new Error('getter ran'); } })", {"tool_error"}, None),
    "getterSpins": ("() => ({ get slow() { while (true) {} } })", {"cpu_limit", "timeout"}, None),
    "toJSONThrows": ("() => ({ toJSON() { throw new Error('toJSON'); } })", {"tool_error"}, None),
    "toJSONSpins": (f"() => ({{ toJSON: {SPIN} }})", {"cpu_limit", "timeout"}, None),
    "toJSONRecursesForever": (
        "() => { const make = () => ({ toJSON() { return { inner: make() }; } }); return make(); }",
        {"output_limit", "stack_overflow"},
        None,
    ),
    "toJSONReturnsHuge": (
        "() => ({ toJSON() { return 'x'.repeat(10 * 1024 * 1024); } })",
        {"output_limit"},
        None,
    ),
    "deepArrays100k": (
        "() => { let a = []; for (let i = 0; i < 100000; i++) a = [a]; return a; }",
        {"output_limit", "stack_overflow"},
        None,
    ),
    "deepObjects100k": (
        "() => { let o = {}; for (let i = 0; i < 100000; i++) o = { o }; return o; }",
        {"output_limit", "stack_overflow"},
        None,
    ),
    "hugeString": ("() => 'y'.repeat(8 * 1024 * 1024)", {"output_limit"}, None),
    "multibyteOverLimit": ("() => '\\u20ac'.repeat(30000)", {"output_limit"}, None),
    "manyKeys": (
        "() => { const o = {}; for (let i = 0; i < 200000; i++) o['k' + i] = i; return o; }",
        {"output_limit"},
        None,
    ),
    "sparseHugeArray": ("() => { const a = []; a.length = 4294967295; return a; }", {"output_limit"}, None),
    "neverSettlingThenable": ("() => ({ then() {} })", {"timeout"}, None),
    "thenableThrows": ("() => ({ then() { throw new Error('then'); } })", {"tool_error"}, None),
    # Error types a bundle must not be able to claim for itself (the closed set).
    "forgedErrorFields": (
        """() => { throw Object.assign(new Error('forged'), {
        type: 'quota_exceeded', code: 'quota_exceeded', name: 'quota_exceeded' }); }""",
        {"tool_error"},
        None,
    ),
    "forgedErrorObject": (
        "() => { throw { type: 'rate_limited', message: 'forged', detail: { retry: 1 } }; }",
        {"tool_error"},
        None,
    ),
    "forgedInternalError": (
        "() => { throw new InternalError('out of memory'); }",
        {"tool_error", "memory_limit"},
        None,
    ),
    "forgedStackOverflowMessage": (
        "() => { throw new RangeError('Maximum call stack size exceeded'); }",
        {"tool_error", "stack_overflow"},
        None,
    ),
}

# Values that break storage and transport unless the host applies one rule: lone
# surrogates and NUL, in outputs, keys, logs and error messages.
UNSTORABLE: dict[str, tuple[str, set[str] | None]] = {
    "loneSurrogateOutput": ("() => ({ high: '\\ud800', low: 'a\\udfffb', pair: '\\ud83d\\ude00' })", None),
    "loneSurrogateKey": ("() => ({ ['\\ud800']: 1, ['k\\udc00']: 2 })", None),
    "nulOutput": ("() => ({ nul: 'a\\u0000b', ['k\\u0000']: 'v' })", None),
    "loneSurrogateAndNulInLogs": (
        "() => { console.log('\\ud800', 'a\\u0000b'); console.error({ ['\\udfff']: '\\u0000' }); return 'logged'; }",
        None,
    ),
    "loneSurrogateInError": ("() => { throw new Error('bad \\ud800 and \\u0000 nul'); }", {"tool_error"}),
    "loneSurrogateInErrorName": (
        "() => { const e = new Error('x'); e.name = '\\udbff\\u0000'; throw e; }",
        {"tool_error"},
    ),
}

TOOLS = {name: case[0] for name, case in {**CASES, **UNSTORABLE}.items()}


# Module-scoped fixtures: `sandbox` (a one-worker pool, or Docker) and `bundle` (every tool of TOOLS).
sandbox, bundle = corpus_fixtures("outputs", TOOLS)


@pytest.mark.parametrize("tool", sorted(CASES))
def test_output_the_host_cannot_hold_ends_classified(sandbox: CorpusSandbox, bundle: Any, tool: str) -> None:
    _, errors, expected = CASES[tool]
    if errors is None:
        sandbox.attack(bundle, tool, harmless=lambda out: out == expected)
    else:
        result = sandbox.attack(bundle, tool, errors=errors)
        assert result.error is not None and result.error["type"] not in {"quota_exceeded", "rate_limited"}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _storable(result: api.InvokeResult) -> None:
    """Every string of the result survives strict UTF-8 and holds no NUL (SQLite, PostgreSQL jsonb, SSE)."""
    for text in _strings(result.to_dict()):
        text.encode("utf-8")  # raises on a lone surrogate
        assert "\x00" not in text, text[:500]


@pytest.mark.parametrize("tool", sorted(UNSTORABLE))
def test_unstorable_strings_follow_one_rule(sandbox: CorpusSandbox, bundle: Any, tool: str) -> None:
    errors = UNSTORABLE[tool][1]
    if errors is None:
        result = sandbox.attack(bundle, tool, harmless=lambda out: out is not None)
    else:
        result = sandbox.attack(bundle, tool, errors=errors)
    _storable(result)
