"""Corpus, prototype pollution: across calls of one organization (same zygote) and across organizations
(same worker). Call 1 pollutes built-ins, the runtime's plumbing or leaves work behind; call 2 of the
same organization, and the next call of another organization, must see a fresh sandbox.
"""

# ruff: noqa: E501 - the cases are JavaScript sources, kept one statement a line

from __future__ import annotations

from typing import Any

import pytest

from execution.sandbox.limits import Limits
from tests.security.corpus import VICTIM_TOOLS, CorpusSandbox, corpus_fixtures, hostile_bundle

# Each snippet pollutes, then the tool returns "polluted" (unless the case ends at a limit).
POLLUTERS: dict[str, str] = {
    "objectPrototypeProperties": """
      Object.prototype.polluted = "yes";
      Object.prototype.isAdmin = true;
      Object.defineProperty(Object.prototype, "hidden", { get() { return "x"; }, configurable: true });
      Object.prototype[Symbol.iterator] = function* () { yield "forged"; };
      Object.prototype[Symbol.toPrimitive] = () => "forged";""",
    "objectPrototypeToJSON": """
      Object.prototype.toJSON = function () {
        return { ok: false, error: { type: "quota_exceeded", message: "forged by the bundle", detail: {} } };
      };""",
    "objectPrototypeReplyGetters": """
      for (const key of ["ok", "type", "error", "logs", "output", "usage", "message", "detail", "fetches"]) {
        Object.defineProperty(Object.prototype, key, { get() { return "forged"; }, set(v) {}, configurable: true });
      }""",
    "arrayPrototype": """
      Array.prototype.push = function () { return 0; };
      Array.prototype.map = function () { return ["forged"]; };
      Array.prototype.join = function () { return "forged"; };
      Array.prototype.toJSON = function () { return "forged"; };
      Array.prototype[Symbol.iterator] = function* () { yield "forged"; };
      Object.defineProperty(Array.prototype, "0", { get() { return "forged"; }, set(v) {}, configurable: true });""",
    "jsonObject": """
      JSON.stringify = () => '{"ok":true,"output":"forged"}';
      JSON.parse = () => ({ forged: true });
      JSON.forged = true;""",
    "promiseMachinery": """
      const then = Promise.prototype.then;
      Promise.prototype.then = function (a, b) { return then.call(this, () => a && a("forged"), b); };
      Promise.resolve = () => new Promise(() => {});
      Promise.prototype.finally = null;
      globalThis.Promise.forged = true;""",
    "functionPrototype": """
      Function.prototype.call = function () { return "forged"; };
      Function.prototype.apply = function () { return "forged"; };
      Function.prototype.bind = function () { return () => "forged"; };
      Function.prototype.forged = true;""",
    "globalsAndRuntimeObjects": """
      globalThis.leak = "from a previous call";
      globalThis.setTimeout = () => 0;
      globalThis.fetch = () => "forged";
      console.log = () => {};
      console.forged = true;
      process.env.INJECTED = "yes";
      process.forged = true;
      Math.random = () => 4;
      delete globalThis.URL;""",
    "frozenBuiltins": """
      Object.freeze(Object.prototype);
      Object.freeze(Array.prototype);
      Object.freeze(Function.prototype);
      Object.preventExtensions(globalThis);
      Object.seal(JSON);""",
    "collectionsAndReflect": """
      Map.prototype.get = () => "forged";
      Map.prototype.set = function () { return this; };
      Set.prototype.has = () => true;
      WeakMap.prototype.get = () => ({ code: "quota_exceeded" });
      Reflect.apply = () => "forged";
      Reflect.ownKeys = () => [];
      Object.keys = () => ["forged"];
      Object.entries = () => [];
      String.prototype.slice = () => "forged";""",
    "errorMachinery": """
      try { Error.prototype.name = "Forged"; } catch (e) {}
      try { Error.captureStackTrace = () => {}; } catch (e) {}
      globalThis.TypeError = function () { return { forged: true }; };
      globalThis.RangeError = null;
      Error.forged = true;""",
    "arrayIndexAccessors": """
      // Arrays the runtime builds for itself (output pieces, log lists) inherit these accessors.
      const forged = '"forged","ok":false,"error":{"type":"quota_exceeded","message":"forged","detail":{}}';
      for (const index of ["0", "1", "2"]) {
        Object.defineProperty(Array.prototype, index, { get() { return forged; }, set(v) {}, configurable: true });
      }""",
    "zodInternals": """
      const proto = Object.getPrototypeOf(z.number());
      proto._parse = function (input) { return { status: "valid", value: "forged" }; };
      proto.safeParse = () => ({ success: true, data: "forged" });
      z.object = () => "forged";
      z.forged = true;""",
}

# Polluting, then ending at a limit: an interrupted call must not leave its pollution either.
POLLUTE = "Object.prototype.polluted = 'yes'; Array.prototype.push = () => 0; globalThis.leak = 1;"
POLLUTE_THEN_FAIL: dict[str, tuple[str, set[str]]] = {
    "thenSpin": (f"() => {{ {POLLUTE} while (true) {{}} }}", {"cpu_limit", "timeout"}),
    "thenOutOfMemory": (
        f"() => {{ {POLLUTE} const a = []; while (true) a[a.length] = new Array(1e5).fill(1); }}",
        {"memory_limit"},
    ),
    "thenStackOverflow": (
        f"() => {{ {POLLUTE} const f = (n) => f(n + 1) + 1; return f(0); }}",
        {"stack_overflow"},
    ),
    "thenThrow": (f"() => {{ {POLLUTE} throw new Error('after polluting'); }}", {"tool_error"}),
    "thenNeverSettles": (f"() => {{ {POLLUTE} return new Promise(() => {{}}); }}", {"timeout"}),
    "thenLeavesTimersBehind": (
        """() => {
          setTimeout(() => { Object.prototype.late = "timer"; globalThis.leak = 2; }, 30);
          setInterval(() => { Array.prototype.late = "interval"; }, 5);
          Promise.resolve().then(() => new Promise((r) => setTimeout(r, 40))).then(() => { Object.prototype.later = 1; });
          return "left timers";
        }""",
        set(),
    ),
}

TOOLS = {
    **{name: f"() => {{ {body}\n      return 'polluted'; }}" for name, body in POLLUTERS.items()},
    **{name: source for name, (source, _) in POLLUTE_THEN_FAIL.items()},
    "inputProto": """(input) => ({
      inherited: ({}).polluted ?? null,
      ownKeys: Object.keys(input),
      protoIsObject: Object.getPrototypeOf(input) === Object.prototype,
      constructorProto: ({}).constructor.prototype.polluted ?? null,
    })""",
    "fingerprint": VICTIM_TOOLS["fingerprint"],
}

# Top-level pollution that leaves the bundle's own libraries (zod, the lightfast modules) working and
# targets only what the runtime and the engine rely on: the bundle must load and its tool must run.
RUNTIME_TARGETED = [
    "objectPrototypeProperties",
    "objectPrototypeToJSON",
    "objectPrototypeReplyGetters",
    "arrayIndexAccessors",
    "jsonObject",
    "functionPrototype",
    "globalsAndRuntimeObjects",
    "frozenBuiltins",
    "errorMachinery",
]


# Module-scoped fixtures: `sandbox` (a one-worker pool, or Docker) and `bundle` (every tool of TOOLS).
sandbox, bundle = corpus_fixtures("pollution", TOOLS)


@pytest.mark.parametrize("tool", sorted(POLLUTERS))
def test_pollution_never_reaches_the_next_call_of_either_organization(
    sandbox: CorpusSandbox, bundle: Any, tool: str
) -> None:
    for _ in range(2):  # a second round pollutes the zygote that served the first check
        sandbox.attack(bundle, tool, harmless=lambda out: out == "polluted")
        sandbox.assert_fresh_for(bundle)


@pytest.mark.parametrize("tool", sorted(POLLUTE_THEN_FAIL))
def test_pollution_by_a_call_that_ends_at_a_limit_is_gone(
    sandbox: CorpusSandbox, bundle: Any, tool: str
) -> None:
    errors = POLLUTE_THEN_FAIL[tool][1]
    limits = Limits(cpu_ms=300, wall_ms=800, memory_mb=48)
    if errors:
        sandbox.attack(bundle, tool, errors=errors, limits=limits)
    else:
        sandbox.attack(bundle, tool, harmless=lambda out: out == "left timers", limits=limits)
    # Waits past every timer the attack left, so a timer that survived would have fired by now.
    sandbox.assert_fresh_for(bundle, wait_ms=80)


def test_proto_keys_in_input_do_not_pollute(sandbox: CorpusSandbox, bundle: Any) -> None:
    attack = {"__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "yes"}}, "n": 1}

    def check(output: dict[str, Any]) -> None:
        assert output["inherited"] is None and output["constructorProto"] is None, output
        assert output["protoIsObject"] is True, output

    sandbox.attack(bundle, "inputProto", attack, harmless=check)
    sandbox.assert_fresh_for(bundle)


@pytest.mark.parametrize("polluter", RUNTIME_TARGETED)
def test_load_time_pollution_neither_breaks_the_runtime_nor_leaves_its_organization(
    sandbox: CorpusSandbox, polluter: str
) -> None:
    """Org A's bundle pollutes at top level; its calls still run, org B's calls on the worker see nothing."""
    polluted = hostile_bundle(
        {"probe": "() => 'loaded'"}, top_level=POLLUTERS[polluter] + "\nglobalThis.loadLeak = 1;\n"
    )
    for _ in range(2):
        sandbox.attack(polluted, "probe", harmless=lambda out: out == "loaded")


def test_same_bundle_bytes_in_another_organization_start_fresh(sandbox: CorpusSandbox, bundle: Any) -> None:
    """Two organizations upload identical bytes: one's pollution never reaches the other's zygote."""
    sandbox.attack(bundle, "objectPrototypeProperties", harmless=lambda out: out == "polluted")
    sandbox.assert_fresh_for(bundle, org="org_copycat")
