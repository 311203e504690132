"""Calls in a bundle's zygote: each one still starts from the zygote's clean state, limits still hold."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox.limits import Limits
from execution.sandbox.pool import LocalJailBackend, PoolConfig
from execution.sandbox.transform import TransformedBundle, transform

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "sandbox" / "call-children.mjs"


@pytest.fixture(scope="module")
def bundle() -> TransformedBundle:
    """The call-children fixture bundle."""
    return transform(FIXTURE.read_bytes())


@pytest.fixture
def pool() -> Iterator[LocalJailBackend]:
    """One jailed worker, so that every call goes through the same key zygote."""
    backend = LocalJailBackend(PoolConfig(workers=1))
    try:
        yield backend
    finally:
        backend.shutdown()


def _invoke(
    pool: LocalJailBackend,
    bundle: TransformedBundle,
    tool: str,
    input: Any,  # noqa: A002 - the contract's name
    **limits: int,
) -> dict[str, Any]:
    return pool.invoke(
        key="org_a:call-children",
        script=bundle.script,
        env={},
        filename="call-children.js",
        agent="children",
        tool=tool,
        input=input,
        context={"sessionId": "s", "resourceId": "org_a"},
        limits=Limits(**limits),
        egress=None,
    )


def test_every_call_sees_fresh_globals(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    results = [_invoke(pool, bundle, "countCalls", {}) for _ in range(12)]
    assert [result["output"] for result in results] == [{"calls": 1}] * 12


def test_calls_back_to_back_from_threads_stay_isolated(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    with ThreadPoolExecutor(4) as executor:
        outputs = list(executor.map(lambda _: _invoke(pool, bundle, "countCalls", {})["output"], range(24)))
    assert outputs == [{"calls": 1}] * 24


def test_cyclic_garbage_beyond_the_memory_limit_is_collected(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    # 160 MB allocated in total against a 64 MB limit: the raised collection threshold still
    # sits below the limit, so the cycle collector frees the garbage before the limit is reached.
    result = _invoke(pool, bundle, "cyclicGarbage", {"megabytes": 160}, memory_mb=64)
    assert result["ok"], result
    assert result["output"] == {"made": 320}
    assert 0 < result["usage"]["peak_memory_bytes"] < 64 * 1024 * 1024


def test_live_memory_beyond_the_limit_is_still_memory_limit(
    pool: LocalJailBackend, bundle: TransformedBundle
) -> None:
    result = _invoke(pool, bundle, "liveMemory", {"megabytes": 40}, memory_mb=16)
    assert not result["ok"] and result["error"]["type"] == "memory_limit", result
    assert _invoke(pool, bundle, "countCalls", {})["output"] == {"calls": 1}


def test_peak_memory_is_reported_for_a_small_call(pool: LocalJailBackend, bundle: TransformedBundle) -> None:
    result = _invoke(pool, bundle, "countCalls", {})
    assert result["usage"]["peak_memory_bytes"] > 1_000_000
