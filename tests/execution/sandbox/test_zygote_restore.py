"""Calls run in the bundle's zygote, whose JS heap is put back to its post-load snapshot after each one.

Whatever a call leaves behind (globals, prototypes, closure state, pending timers, fetches in
flight, a failed or interrupted call's half-done work) must be invisible to the next call, as it
was when every call ran in a forked child. The pools here run the native runner in its verify
mode: after every restore the zygote compares its heap with the snapshot byte for byte and dies
on any difference, which the next call would see as a lost zygote.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.pool import LocalJailBackend, PoolConfig, resolve_runner, runner_from_env
from execution.sandbox.transform import TransformedBundle, transform

pytestmark = pytest.mark.skipif(
    resolve_runner(runner_from_env()) != "native",
    reason="the heap snapshot and restore are the native runner's (the Python runner forks per call)",
)

KEY = "org_a:restore"
SOURCE = b"""
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";

var empty = z.object({});
var t = (description, execute, inputSchema = empty) => createTool({ description, inputSchema, execute });
var kept = []; // module state a closure keeps alive across calls if the heap were not restored
var sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

var tools = {
  pollute: t("leaves state behind everywhere it can", async ({ secret }) => {
    globalThis.leftover = secret;
    Object.prototype.polluted = secret;
    kept.push(secret);
    z.string().constructor.prototype.parse = () => secret;
    setTimeout(() => { globalThis.fromTimer = secret; }, 30);
    setInterval(() => { kept.push("interval:" + secret); }, 1);
    fetch("https://api.example.com/leak?" + secret).then(() => { globalThis.fromFetch = secret; },
                                                       () => { globalThis.fromFetch = secret; });
    JSON.stringify = () => "hijacked:" + secret;
    return "polluted";
  }, z.object({ secret: z.string() })),
  observe: t("reports what earlier calls left behind", async () => {
    await sleep(60);
    return {
      leftover: globalThis.leftover ?? null,
      polluted: ({}).polluted ?? null,
      kept: kept.slice(),
      fromTimer: globalThis.fromTimer ?? null,
      fromFetch: globalThis.fromFetch ?? null,
      zodParses: z.string().safeParse(5).success === false,
      json: JSON.stringify({ a: 1 }),
    };
  }),
  random: t("draws random values", () => ({
    math: Math.random(),
    bytes: Array.from(crypto.getRandomValues(new Uint8Array(16))),
  })),
  spin: t("spins until interrupted", () => { globalThis.leftover = "spin"; while (true) {} }),
  oom: t("keeps allocating", () => {
    const a = [];
    globalThis.leftover = a;
    while (true) a.push(new Array(4096).fill(1));
  }),
  recurse: t("recurses without end", () => { const f = (n) => f(n + 1) + 1; return f(0); }),
  fail: t("throws after leaving state", () => { kept.push("failed"); throw new Error("on purpose"); }),
  allocate: t("keeps some megabytes alive until it returns", ({ megabytes }) => {
    const held = [];
    for (let i = 0; i < megabytes * 2; i++) held.push(new Array(32768).fill(i)); // ~512 KB each
    return held.length;
  }, z.object({ megabytes: z.number() })),
  nativeSpin: t("one native builtin far past the CPU limit", () => {
    const text = "[" + "1,".repeat(6000000) + "1]";
    return JSON.parse(text).length;
  }),
};

export default createLightfast({
  agents: { restore: createAgent({ name: "restore", system: "test", model: "demo", tools }) },
});
"""

CLEAN = {
    "leftover": None,
    "polluted": None,
    "kept": [],
    "fromTimer": None,
    "fromFetch": None,
    "zodParses": True,
    "json": '{"a":1}',
}


@pytest.fixture(scope="module")
def bundle() -> TransformedBundle:
    """The restore test bundle."""
    return transform(SOURCE)


@pytest.fixture
def pool() -> Iterator[LocalJailBackend]:
    """One worker, so every call goes through the same zygote; restores verified byte for byte."""
    backend = LocalJailBackend(PoolConfig(workers=1, test_verify_restore=True, test_probes=True))
    try:
        yield backend
    finally:
        backend.shutdown()


def _invoke(
    pool: LocalJailBackend,
    bundle: TransformedBundle,
    tool: str,
    input: Any = None,  # noqa: A002 - the contract's name
    **limits: int,
) -> Any:
    return pool.invoke(
        key=KEY,
        script=bundle.script,
        env={},
        filename="restore.js",
        agent="restore",
        tool=tool,
        input=input or {},
        context={"sessionId": "s", "resourceId": "org_a"},
        limits=Limits(**limits),
        egress=None,
    )


def _zygote_pids(pool: LocalJailBackend) -> list[int]:
    """The worker's children: with one key loaded and no call running, its zygote."""
    (worker,) = pool._all
    with open(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children") as children:
        return [int(pid) for pid in children.read().split()]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_call_leaves_nothing_for_the_next_one(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    (zygote,) = _zygote_pids(pool)
    for number in range(5):
        assert _invoke(pool, bundle, "pollute", {"secret": f"secret-{number}"})["output"] == "polluted"
        assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    # Every call ran in the same process: the clean state is the restore's, not a new zygote's.
    assert _zygote_pids(pool) == [zygote]


def test_failed_and_interrupted_calls_leave_nothing(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    expected = {
        "spin": "cpu_limit",
        "oom": "memory_limit",
        "recurse": "stack_overflow",
        "fail": "tool_error",
    }
    for tool, error in expected.items():
        result = _invoke(pool, bundle, tool, cpu_ms=300, memory_mb=32)
        assert result["ok"] is False and result["error"]["type"] == error, result
        assert _invoke(pool, bundle, "observe")["output"] == CLEAN


def test_random_values_differ_between_calls(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    draws = [_invoke(pool, bundle, "random")["output"] for _ in range(6)]
    assert len({draw["math"] for draw in draws}) == 6
    assert len({tuple(draw["bytes"]) for draw in draws}) == 6


def test_restores_copy_back_only_the_pages_calls_wrote(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    for _ in range(20):
        _invoke(pool, bundle, "random")
    _invoke(pool, bundle, "observe")
    # The zygote reads the probe after it restored the heap of the last call.
    stats = pool.probe("arena", key=KEY)
    assert stats["restores"] == 21
    assert stats["snapshot_bytes"] > 1_000_000
    # A written page faults once and is hot (copied back) until the pages are protected again,
    # which the verify mode does every third restore: so each restore copied only a few pages.
    assert stats["cools"] == 7
    assert 0 < stats["faults"] / stats["restores"] < stats["pages"] / 10
    assert stats["hot_pages"] < stats["pages"] / 10
    # The snapshot keeps a page's loaded bytes only once a call wrote it.
    assert stats["hot_pages"] <= stats["saved_pages"] < stats["pages"] / 5


def test_backstop_kills_the_zygote_and_the_next_call_loads_it_again(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    (before,) = _zygote_pids(pool)
    # One JSON.parse of ~12 MB never reaches an interrupt check: the profiling timer kills the zygote.
    with pytest.raises(SandboxError) as killed:
        _invoke(pool, bundle, "nativeSpin", cpu_ms=20, wall_ms=10_000, memory_mb=256)
    assert killed.value.code == "cpu_limit"
    assert killed.value.detail == {"signal": "SIGPROF"}
    assert KEY not in next(iter(pool._all)).loaded
    # The next call on the same key reloads the bundle in a new zygote, transparently.
    assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    (after,) = _zygote_pids(pool)
    assert after != before
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)


def test_large_calls_do_not_grow_the_zygote(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    # The zygote restores after it answered; the answer to the small call that follows each
    # measurement's last call means that restore is done.
    for _ in range(3):
        assert _invoke(pool, bundle, "allocate", {"megabytes": 40})["output"] == 80
    assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    (zygote,) = _zygote_pids(pool)
    settled = _rss_kb(zygote)
    for number in range(30):
        if number % 10 == 9:
            over = _invoke(pool, bundle, "allocate", {"megabytes": 80})
            assert over["error"]["type"] == "memory_limit", over
        else:
            assert _invoke(pool, bundle, "allocate", {"megabytes": 40})["output"] == 80
    assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    # Each call used ~40 MB of arena above the snapshot; the restore hands it back to the kernel.
    assert _rss_kb(zygote) - settled < 4 * 1024
    assert _rss_kb(zygote) < 48 * 1024
    assert _zygote_pids(pool) == [zygote]


def test_verified_restores_over_a_mixed_workload(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    # Verify mode aborts the zygote on the first restore that differs from the snapshot; the calls
    # after it would then fail with a lost zygote. Same zygote from first call to last: none did.
    _invoke(pool, bundle, "observe")
    (zygote,) = _zygote_pids(pool)
    plan: list[tuple[str, dict[str, Any], dict[str, int]]] = [
        ("pollute", {"secret": "a"}, {}),
        ("random", {}, {}),
        ("fail", {}, {}),
        ("spin", {}, {"cpu_ms": 100}),
        ("allocate", {"megabytes": 12}, {}),
        ("oom", {}, {"memory_mb": 24}),
        ("recurse", {}, {}),
        ("pollute", {"secret": "b"}, {}),
        ("allocate", {"megabytes": 2}, {}),
    ]
    for _ in range(4):
        for tool, input, limits in plan:  # noqa: A001
            _invoke(pool, bundle, tool, input, **limits)
        assert _invoke(pool, bundle, "observe")["output"] == CLEAN
    assert _zygote_pids(pool) == [zygote]


# The next call finds the zygote gone when it reads (0 s) or, once it has exited, when it writes
# its request (EPIPE): the error is the same.
@pytest.mark.parametrize("pause_s", [0.0, 0.5])
def test_verify_mode_notices_a_restore_that_misses_a_page(bundle: TransformedBundle, pause_s: float) -> None:
    # The control for every test above: with restores that copy nothing back, the first restore
    # after a call that wrote to the heap differs from the snapshot and the zygote is gone.
    broken = LocalJailBackend(PoolConfig(workers=1, test_verify_restore=True, test_break_restore=True))
    try:
        assert _invoke(broken, bundle, "pollute", {"secret": "x"})["output"] == "polluted"
        time.sleep(pause_s)
        with pytest.raises(SandboxError) as lost:
            _invoke(broken, bundle, "observe")
        assert lost.value.code == "sandbox_crash"
        # Not SIGABRT: a zygote may not signal, not even itself; the runner's checks exit with 70.
        assert "aborted: an internal check of the runner failed" in lost.value.message
        assert lost.value.detail == {"exit_code": 70}
        assert KEY not in next(iter(broken._all)).loaded
    finally:
        broken.shutdown()
