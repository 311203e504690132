"""One organization's zygote cannot break or starve another's calls.

Each native zygote owns its own channel to the host (no zygote ever holds its worker's stdin or
stdout), anything unexpected in an exchange kills what it touched, and the pool bounds the
resident memory of zygotes per zygote, per organization and in total. These are properties of
the local pool's native runner: the Docker backend keeps one container pool per organization.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from execution.sandbox import pool as pool_module
from execution.sandbox.errors import SandboxError
from execution.sandbox.frames import RunnerFrames
from execution.sandbox.limits import Limits
from execution.sandbox.pool import LocalJailBackend, PoolConfig, resolve_runner, runner_from_env
from execution.sandbox.transform import TransformedBundle, transform


@pytest.fixture(autouse=True)
def _native_local_pool(sandbox_backend: str) -> None:
    if sandbox_backend != "local":
        pytest.skip(
            reason="zygote channels and memory budgets are the local pool's; docker isolates per organization"
        )
    if resolve_runner(runner_from_env()) != "native":
        pytest.skip(reason="zygote channels are the native runner's (the Python runner relays)")


SOURCE = b"""
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";

var held = [];
for (let i = 0; i < HOLD_MB * 2; i++) held.push(new Array(32768).fill(i)); // ~512 KB each
var t = (execute, inputSchema = z.object({})) => createTool({ description: "t", inputSchema, execute });
var tools = {
  hello: t(() => "hello"),
  spin: t(() => { while (true) {} }),
  allocate: t(({ megabytes }) => {
    const kept = [];
    for (let i = 0; i < megabytes * 2; i++) kept.push(new Array(32768).fill(i));
    return kept.length;
  }, z.object({ megabytes: z.number() })),
};
export default createLightfast({
  agents: { iso: createAgent({ name: "iso", system: "test", model: "demo", tools }) },
});
"""


def _bundle(hold_mb: int = 0) -> TransformedBundle:
    return transform(SOURCE.replace(b"HOLD_MB", str(hold_mb).encode()))


@pytest.fixture(scope="module")
def bundle() -> TransformedBundle:
    """The isolation test bundle (holds nothing at load)."""
    return _bundle()


@pytest.fixture
def pool() -> Iterator[LocalJailBackend]:
    """One worker: every organization's zygotes live in the same worker process."""
    backend = LocalJailBackend(PoolConfig(workers=1, test_probes=True, memory_sweep_s=0))
    try:
        yield backend
    finally:
        backend.shutdown()


def _invoke(
    pool: LocalJailBackend, bundle: TransformedBundle, key: str, tool: str = "hello", **kw: Any
) -> Any:
    limits = kw.pop("limits", Limits())
    return pool.invoke(
        key=key,
        script=bundle.script,
        env={},
        filename="iso.js",
        agent="iso",
        tool=tool,
        input=kw.pop("input", {}),
        context={"sessionId": "s", "resourceId": key},
        limits=limits,
        egress=None,
    )


def _zygote_pid(pool: LocalJailBackend, key: str) -> int:
    (zygote,) = pool._zygotes[key]
    return zygote.proc.pid


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie not reaped yet
    except FileNotFoundError:
        return True


def _worker_pid(pool: LocalJailBackend) -> int:
    (worker,) = pool._all
    return worker.proc.pid


# --- a broken or stalled zygote fails only its own calls ---------------------------------


def test_a_malformed_frame_fails_only_its_own_call(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    assert _invoke(pool, bundle, "org_a:v1")["output"] == "hello"
    assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
    worker, attacker, victim = _worker_pid(pool), _zygote_pid(pool, "org_a:v1"), _zygote_pid(pool, "org_b:v1")
    # Org A's zygote writes a frame header announcing more bytes than follow, then non-JSON.
    with pytest.raises(SandboxError) as broken:
        pool.probe("garbage", key="org_a:v1", limits=Limits(wall_ms=2000))
    assert broken.value.code in {"sandbox_crash", "timeout"}
    assert _gone(attacker)
    # Org B's next call on the same worker is served by its untouched zygote at once.
    assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
    assert _zygote_pid(pool, "org_b:v1") == victim
    assert _worker_pid(pool) == worker
    # Org A's next call loads its bundle again.
    assert _invoke(pool, bundle, "org_a:v1")["output"] == "hello"
    assert _zygote_pid(pool, "org_a:v1") != attacker


def test_a_host_side_exception_kills_the_zygote_it_touched(
    pool: LocalJailBackend, bundle: TransformedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _invoke(pool, bundle, "org_a:v1")["output"] == "hello"
    assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
    worker, attacker, victim = _worker_pid(pool), _zygote_pid(pool, "org_a:v1"), _zygote_pid(pool, "org_b:v1")
    attacker_fd = pool._zygotes["org_a:v1"][0].stdout
    real_read = RunnerFrames.read

    def read_that_breaks(self: RunnerFrames, fd: int, pending: Any = ()) -> dict[str, Any]:
        frame = real_read(self, fd, pending)
        if fd == attacker_fd:
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON object")
        return frame

    monkeypatch.setattr(RunnerFrames, "read", read_that_breaks)
    with pytest.raises(SandboxError) as broken:
        _invoke(pool, bundle, "org_a:v1")
    assert broken.value.code == "sandbox_crash"
    assert "RecursionError" in broken.value.message
    monkeypatch.setattr(RunnerFrames, "read", real_read)
    assert _gone(attacker)
    assert "org_a:v1" not in pool._zygotes
    assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
    assert _zygote_pid(pool, "org_b:v1") == victim
    assert _worker_pid(pool) == worker


def test_a_busy_zygote_does_not_block_another_key_on_its_worker(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    assert _invoke(pool, bundle, "org_a:v1")["output"] == "hello"
    started = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:

        def spin() -> str:
            started.set()
            try:
                result = _invoke(pool, bundle, "org_a:v1", "spin", limits=Limits(cpu_ms=4000, wall_ms=20_000))
            except SandboxError as exc:  # the kernel's CPU backstop took the zygote with it
                return exc.code
            return str(result["error"]["type"])

        spinning = executor.submit(spin)
        started.wait()
        while not pool._zygotes["org_a:v1"][0].busy:
            time.sleep(0.001)
        # Org A's zygote reads nothing while it spins; org B loads and runs on the same worker.
        assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
        assert not spinning.done()
        assert spinning.result() == "cpu_limit"
    assert _invoke(pool, bundle, "org_a:v1")["output"] == "hello"


def test_a_timed_out_call_kills_its_zygote_not_its_worker(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
    worker, victim = _worker_pid(pool), _zygote_pid(pool, "org_b:v1")
    _invoke(pool, bundle, "org_a:v1")
    attacker = _zygote_pid(pool, "org_a:v1")
    with pytest.raises(SandboxError) as late:
        # The engine's own wall check is past the host's: the host's deadline ends the call.
        pool.probe("garbage", key="org_a:v1", limits=Limits(wall_ms=300))
    assert late.value.code in {"timeout", "sandbox_crash"}
    assert _gone(attacker)
    assert _worker_pid(pool) == worker
    assert _invoke(pool, bundle, "org_b:v1")["output"] == "hello"
    assert _zygote_pid(pool, "org_b:v1") == victim


# --- memory budgets: one organization cannot starve another's zygotes ----------------------


def _resident_mb(pid: int) -> float:
    resident = pool_module._private_resident_bytes(pid)
    assert resident is not None
    return resident / 2**20


def _peak_resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def _settle() -> None:
    time.sleep(0.05)  # the sweep measures a zygote only once it has been idle for 20 ms


def test_a_large_call_leaves_its_zygote_under_the_cap(bundle: TransformedBundle) -> None:
    backend = LocalJailBackend(PoolConfig(workers=1, zygote_resident_mb=64, memory_sweep_s=0))
    try:
        result = _invoke(
            backend, bundle, "org_a:v1", "allocate", input={"megabytes": 150}, limits=Limits(memory_mb=400)
        )
        assert result["output"] == 300
        zygote = _zygote_pid(backend, "org_a:v1")
        assert _peak_resident_mb(zygote) > 150  # the call really had it all resident
        _settle()
        assert backend.sweep_memory() == []
        assert _resident_mb(zygote) < 64
        assert _invoke(backend, bundle, "org_a:v1")["output"] == "hello"
        assert _zygote_pid(backend, "org_a:v1") == zygote
    finally:
        backend.shutdown()


def test_a_zygote_above_the_cap_is_reaped_and_loads_again() -> None:
    heavy = _bundle(hold_mb=40)
    backend = LocalJailBackend(PoolConfig(workers=1, zygote_resident_mb=32, memory_sweep_s=0))
    try:
        assert _invoke(backend, heavy, "org_a:v1")["output"] == "hello"
        zygote = _zygote_pid(backend, "org_a:v1")
        _settle()
        assert backend.sweep_memory() == ["org_a:v1"]
        assert _gone(zygote)
        assert _invoke(backend, heavy, "org_a:v1")["output"] == "hello"
        assert _zygote_pid(backend, "org_a:v1") != zygote
    finally:
        backend.shutdown()


@pytest.mark.parametrize("budget", ["organization", "pool"])
def test_one_organizations_keys_cannot_push_the_pool_over_its_budget(budget: str) -> None:
    heavy = _bundle(hold_mb=40)  # ~48 MB private resident per zygote here
    bounds = {"organization": {"organization_memory_mb": 120}, "pool": {"memory_budget_mb": 200}}[budget]
    backend = LocalJailBackend(PoolConfig(workers=1, memory_sweep_s=0, **bounds))  # type: ignore[arg-type]
    try:
        assert _invoke(backend, heavy, "org_b:v1")["output"] == "hello"
        other = _zygote_pid(backend, "org_b:v1")
        keys = [f"org_a:v{number}" for number in range(6)]
        for key in keys:
            assert _invoke(backend, heavy, key)["output"] == "hello"
        _settle()
        reaped = backend.sweep_memory()
        assert reaped and set(reaped) <= set(keys)
        assert reaped == keys[: len(reaped)]  # least recently used first
        status = backend.status()
        limit = bounds.get("memory_budget_mb") or bounds["organization_memory_mb"]
        org_a = sum(z.resident for k in keys for z in backend._zygotes.get(k, []))
        assert org_a <= limit * 2**20
        assert status["zygote_resident_mb"] <= backend.config.memory_budget_mb
        # Org B, within its share, keeps its warm zygote.
        assert _zygote_pid(backend, "org_b:v1") == other
        assert not _gone(other)
        assert _invoke(backend, heavy, keys[0])["output"] == "hello"
    finally:
        backend.shutdown()


def test_the_memory_budget_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTFAST_SANDBOX_MEMORY_BUDGET_MB", "300")
    monkeypatch.setenv("LIGHTFAST_SANDBOX_ORGANIZATION_MEMORY_MB", "150")
    monkeypatch.setenv("LIGHTFAST_SANDBOX_ZYGOTE_RESIDENT_MB", "50")
    config = PoolConfig()
    assert (config.memory_budget_mb, config.organization_memory_mb, config.zygote_resident_mb) == (
        300,
        150,
        50,
    )
    monkeypatch.setenv("LIGHTFAST_SANDBOX_MEMORY_BUDGET_MB", "0")
    with pytest.raises(ValueError, match="LIGHTFAST_SANDBOX_MEMORY_BUDGET_MB"):
        PoolConfig()


def test_zygote_channels_are_not_the_workers_stdio(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    _invoke(pool, bundle, "org_a:v1")
    zygote, worker = _zygote_pid(pool, "org_a:v1"), _worker_pid(pool)
    for fd in (0, 1):
        assert os.readlink(f"/proc/{zygote}/fd/{fd}") != os.readlink(f"/proc/{worker}/fd/{fd}")
