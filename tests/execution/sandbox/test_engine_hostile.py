"""The engine against hostile bundles: each tool ends in time with a classified error or a harmless result."""

from __future__ import annotations

import os
import time

import pytest

from execution.sandbox.engine import Engine
from execution.sandbox.limits import Limits
from tests.execution.sandbox.engine_harness import CannedHost, invoke_in_fork, loaded_engine, native_requested

CPU_MS = 300
WALL_MS = 800
SLACK_MS = 100
LIMITS = Limits(cpu_ms=CPU_MS, wall_ms=WALL_MS)


@pytest.fixture(scope="module")
def hostile() -> Engine:
    return loaded_engine("hostile/tools.mjs", env={"PUBLIC_FLAG": "on"})


@pytest.fixture(scope="module")
def extra() -> Engine:
    return loaded_engine("hostile-extra.mjs", env={"PUBLIC_FLAG": "on"})


def _run(engine: Engine, tool: str, *, agent: str = "hostile", limits: Limits = LIMITS, **kwargs):
    started = time.monotonic()
    result = invoke_in_fork(engine, agent=agent, tool=tool, limits=limits, **kwargs)
    result["elapsed_ms"] = (time.monotonic() - started) * 1000
    return result


def _classified_as(result, allowed: set[str], limits: Limits = LIMITS) -> bool:
    """Whether the error type is one of `allowed`. On a starved machine the wall limit can fire
    before a spinning call has had its CPU limit of the cores; `timeout` is then the correct
    classification of a call that would otherwise end `cpu_limit`."""
    error_type = result["error"]["type"]
    if error_type in allowed:
        return True
    usage = result.get("usage") or {}
    starved = usage.get("cpu_ms", limits.cpu_ms) < limits.cpu_ms <= usage.get("wall_ms", 0)
    return error_type == "timeout" and "cpu_limit" in allowed and starved


def _assert_within_limits(result, limits: Limits = LIMITS):
    if result.get("child_killed"):
        # A native builtin the interrupt handler cannot stop: the kernel's profiling timer killed
        # the process running the call CPU_BACKSTOP_MS past its CPU limit.
        assert result["error"]["type"] == "cpu_limit", result
        assert result["error"]["detail"] == {"signal": "SIGPROF"}, result
        return
    usage = result["usage"]
    # CPU-bound tools are held to the CPU limit, waiting ones to the wall limit (each plus 100 ms).
    assert usage["cpu_ms"] <= limits.cpu_ms + SLACK_MS, usage
    assert usage["wall_ms"] <= limits.wall_ms + SLACK_MS, usage


# tool -> (expected error type, or None for a harmless result)
SHARED_TOOLS = {
    "infiniteLoop": "cpu_limit",
    "asyncInfiniteLoop": {"cpu_limit", "timeout"},
    "memoryBomb": "memory_limit",
    "bufferBomb": "tool_error",
    "stringBomb": "memory_limit",
    "deepRecursion": "stack_overflow",
    "regexBomb": "cpu_limit",
    "hugeOutput": "output_limit",
    "logFlood": "cpu_limit",
    "timerFlood": {"cpu_limit", "memory_limit"},
    "neverResolves": "timeout",
    "escapeProcess": None,
    "escapeRequire": None,
    "dynamicImport": None,
    "fetchMetadata": "egress_denied",
    "fetchLoopback": "egress_denied",
    "fetchPrivate": "egress_denied",
    "pollutePrototype": None,
    "checkPollution": None,
    "cyclicOutput": None,
    "trickyOutput": "tool_error",
    "throwsNonError": "tool_error",
}


def test_every_shared_hostile_tool_is_covered(hostile):
    assert set(hostile.introspect()["agents"]["hostile"]["tools"]) == set(SHARED_TOOLS) | {"badInput"}


@pytest.mark.parametrize("tool", sorted(SHARED_TOOLS))
def test_shared_hostile_tool(hostile, tool):
    result = _run(hostile, tool)
    expected = SHARED_TOOLS[tool]
    if expected is None:
        assert result["ok"] is True, result
    else:
        assert result["ok"] is False
        allowed = expected if isinstance(expected, set) else {expected}
        assert _classified_as(result, allowed), result
        assert result["error"]["message"]
    _assert_within_limits(result)


def test_escapes_find_nothing_of_the_host(hostile):
    process = _run(hostile, "escapeProcess")["output"]
    assert process["env"] == ["PUBLIC_FLAG"]
    assert set(process["process"]) <= {"env", "argv", "platform", "versions", "nextTick", "emitWarning"}
    assert set(_run(hostile, "escapeRequire")["output"].values()) == {"blocked"}
    assert "could not load module" in _run(hostile, "dynamicImport")["output"]["blocked"]


def test_limit_errors_mark_the_engine_broken(hostile):
    assert _run(hostile, "infiniteLoop")["broken"] is True
    assert _run(hostile, "memoryBomb")["broken"] is True
    assert _run(hostile, "deepRecursion")["broken"] is False


def test_log_flood_is_truncated_with_a_marker(hostile):
    result = _run(hostile, "logFlood", limits=Limits(cpu_ms=CPU_MS, wall_ms=WALL_MS, log_bytes=10_000))
    messages = [entry["message"] for entry in result["logs"]]
    assert sum(len(m) for m in messages[:-1]) <= 10_000
    assert messages[-1] == "[logs truncated: limit of 10000 bytes reached]"


def test_cyclic_and_tricky_outputs(hostile, extra):
    assert _run(hostile, "cyclicOutput")["output"] == {"self": "[Circular]"}
    tricky = _run(hostile, "trickyOutput")
    assert "getter ran on the host" in tricky["error"]["message"]
    harmless = _run(extra, "harmlessTricky")
    assert harmless["output"] == {
        "big": "10",
        "nan": None,
        "inf": None,
        "date": "1970-01-01T00:00:00.000Z",
        "nested": [None, None, "1"],
    }


def test_thrown_non_error_with_looping_to_string_does_not_hang(hostile):
    result = _run(hostile, "throwsNonError")
    assert result["error"]["type"] == "tool_error"
    assert "nested" in result["error"]["message"]
    assert result["usage"]["cpu_ms"] < CPU_MS


def test_bad_input_for_hostile_agent(hostile):
    bad = _run(hostile, "badInput", input={"n": "two"})
    assert bad["error"]["type"] == "invalid_input"
    assert bad["error"]["detail"]["issues"][0]["path"] == ["n"]
    assert _run(hostile, "badInput", input={"n": 21})["output"] == 42


def test_pollution_does_not_survive_into_the_next_forked_call(hostile):
    # The way the worker pool runs calls: fork from one loaded engine per call.
    assert _run(hostile, "pollutePrototype")["output"] == "polluted"
    assert _run(hostile, "checkPollution")["output"] == {"polluted": None, "leak": None, "jsonOk": True}


@pytest.mark.skipif(
    native_requested(),
    reason="the one-invoke contract of the in-process Python Engine class; "
    "the native runner has no such object (its zygote restores the heap after every call by construction)",
)
def test_pollution_and_check_in_one_process_would_leak_so_reuse_is_refused(hostile):
    # Documented contract: one invoke per engine. Without fork, the second call is refused instead of
    # silently running on a polluted heap.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            hostile.invoke(
                agent="hostile",
                tool="pollutePrototype",
                input={},
                context={},
                limits=LIMITS,
                host=CannedHost(),
            )
            try:
                hostile.invoke(
                    agent="hostile",
                    tool="checkPollution",
                    input={},
                    context={},
                    limits=LIMITS,
                    host=CannedHost(),
                )
            except RuntimeError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


# ---------------------------------------------------------------- our own hostile cases

EXTRA_TOOLS = {
    "errorToStringThenLoop": "cpu_limit",
    "objectToPrimitiveThenLoop": "cpu_limit",
    "internalErrorToStringThenLoop": "cpu_limit",
    "prepareStackTraceLoop": "tool_error",
    "throwsToPrimitiveLoop": "tool_error",
    "throwsProxy": "tool_error",
    "proxyOutputLoops": "cpu_limit",
    "proxyOutputThrows": "tool_error",
    "harmlessTricky": None,
    "microtaskThrows": None,
    "hugeJSONParse": {"stack_overflow", "tool_error"},
    "hugeJSONString": {"memory_limit", "cpu_limit"},
    "atomicsWait": None,
    "functionEscape": None,
    "zodPollute": None,
    "zodCheck": "invalid_input",
    "protoInput": None,
    "randomness": None,
    "environment": None,
    "allocateThenReturn": "memory_limit",
    "slowTimer": "timeout",
    "fetchMany": "egress_denied",
}


def test_every_extra_hostile_tool_is_covered(extra):
    assert set(extra.introspect()["agents"]["hostile"]["tools"]) == set(EXTRA_TOOLS)


@pytest.mark.parametrize("tool", sorted(EXTRA_TOOLS))
def test_extra_hostile_tool(extra, tool):
    inputs = {"zodCheck": {"n": "x"}, "protoInput": {"n": 1}}
    result = _run(extra, tool, input=inputs.get(tool, {}))
    expected = EXTRA_TOOLS[tool]
    if expected is None:
        assert result["ok"] is True, result
    else:
        allowed = expected if isinstance(expected, set) else {expected}
        assert result["ok"] is False and _classified_as(result, allowed), result
    _assert_within_limits(result)


def test_error_conversion_hooks_cannot_hang_the_engine(extra):
    # Each of these installs bundle code where the engine's error-to-text conversion would look;
    # the interrupt must still come back as cpu_limit within the limit.
    for tool in ("errorToStringThenLoop", "objectToPrimitiveThenLoop", "internalErrorToStringThenLoop"):
        result = _run(extra, tool)
        assert _classified_as(result, {"cpu_limit"}), result
        assert result["elapsed_ms"] < CPU_MS + 1000


def test_microtask_errors_are_logged_not_raised(extra):
    result = _run(extra, "microtaskThrows")
    assert result["output"] == "survived"
    assert any(entry["message"].startswith("Uncaught") for entry in result["logs"])


def test_function_constructor_and_import_find_no_host(extra):
    # Buffer is found: it is the sandbox's own global (the npm `buffer` package, as Cloudflare's
    # nodejs_compat offers it; docs/runtime.md), not a host object.
    assert _run(extra, "functionEscape")["output"] == {
        "found": ["Buffer"],
        "imported": "blocked",
        "fileImport": "blocked",
    }


def test_atomics_cannot_block(extra):
    assert _run(extra, "atomicsWait")["output"].startswith("blocked")


def test_zod_tampering_does_not_reach_the_next_call(extra):
    assert _run(extra, "zodPollute")["output"] == "tampered"
    checked = _run(extra, "zodCheck", input={"n": "not a number"})
    assert checked["error"]["type"] == "invalid_input"
    assert _run(extra, "zodCheck", input={"n": 5})["output"] == {"n": 5, "polluted": None}


def test_proto_keys_in_input_do_not_pollute(extra):
    result = _run(
        extra, "protoInput", input={"n": 1, "__proto__": {"polluted": "yes"}, "constructor": {"x": 1}}
    )
    output = result["output"]
    assert output["polluted"] is None
    assert output["protoIsObject"] is True


def test_randomness_differs_between_forked_calls(extra):
    first = _run(extra, "randomness")["output"]
    second = _run(extra, "randomness")["output"]
    assert first["math"] != second["math"]
    assert first["uuid"] != second["uuid"]
    assert first["bytes"] != second["bytes"]
    assert first["uuid"][14] == "4"


def test_environment_holds_only_what_was_given(extra):
    # Buffer is the sandbox's own global (npm `buffer`, docs/runtime.md), not the host's.
    assert _run(extra, "environment")["output"] == {"env": {"PUBLIC_FLAG": "on"}, "bufferType": "function"}


def test_fetch_count_limit(extra):
    result = _run(extra, "fetchMany", limits=Limits(cpu_ms=CPU_MS, wall_ms=WALL_MS, max_fetches=50))
    assert result["error"]["type"] == "egress_denied"
    assert "at most 50" in result["error"]["message"]


def test_deeply_nested_input_is_rejected_before_the_engine(extra):
    nested: object = 1
    for _ in range(100_000):
        nested = [nested]
    result = _run(extra, "protoInput", input={"n": nested})
    assert result["error"]["type"] == "invalid_input"


def test_output_limit_counts_bytes_not_characters(extra):
    # 400k three-byte characters are 1.2 MB of UTF-8 while only 400k characters long.
    engine = Engine()
    from execution.sandbox.transform import transform

    engine.load(
        transform(b"""import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
var wide = createTool({ description: "", inputSchema: z.object({}),
  execute: () => "\\u20ac".repeat(400000) });
var a = createAgent({ name: "a", system: "", model: "demo", tools: { wide } });
export default createLightfast({ agents: { a } });
""").script,
        env={},
    )
    result = invoke_in_fork(engine, agent="a", tool="wide")
    assert result["error"]["type"] == "output_limit"


def test_stack_limit_is_safe(extra):
    # Measured: with the largest allowed stack limit (4 MiB, half the 8 MiB main thread stack) deep
    # recursion ends as a classified error instead of overflowing the real stack (a segfault).
    from execution.sandbox.transform import transform

    engine = Engine()
    engine.load(
        transform(b"""import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
var deep = createTool({ description: "", inputSchema: z.object({}), execute: () => {
  const f = (n) => f(n + 1) + 1; return f(0); } });
var deepJSON = createTool({ description: "", inputSchema: z.object({}), execute: () => {
  let s = "[".repeat(1000000) + "]".repeat(1000000); return JSON.parse(s).length; } });
var a = createAgent({ name: "a", system: "", model: "demo", tools: { deep, deepJSON } });
export default createLightfast({ agents: { a } });
""").script,
        env={},
    )
    for tool in ("deep", "deepJSON"):
        result = invoke_in_fork(engine, agent="a", tool=tool, limits=Limits(stack_kb=4096, cpu_ms=2000))
        assert result["error"]["type"] in {"stack_overflow", "tool_error"}, result


@pytest.mark.skipif(not native_requested(), reason="the CPU backstop lives in the runner's zygote")
def test_native_builtin_past_the_cpu_limit_is_killed_by_the_backstop(extra):
    # One JSON.parse of ~60 MB never reaches an interrupt check; 20 ms of CPU is far less than it needs.
    result = _run(extra, "hugeJSONString", limits=Limits(cpu_ms=20, wall_ms=5000, memory_mb=256))
    assert result["ok"] is False
    assert result["error"]["type"] == "cpu_limit"
    _assert_within_limits(result, Limits(cpu_ms=20, wall_ms=5000, memory_mb=256))
