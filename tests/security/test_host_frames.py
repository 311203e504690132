"""Finding 2, host side: the host re-validates every frame a runner sends (execution/sandbox/frames.py).

Three layers of proof: the four attacks of the issue from a real bundle that forges the runtime's
replies (blocked by the host today; once the runtime stops them they must still end classified and
within limits), forged frames written by a lying runner process that the real pool started, and
the validator fed forged payloads directly.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.frames import MAX_FRAME_DEPTH, SANDBOX_CODES, RunnerFrames, check_depth
from execution.sandbox.jail import JailConfig
from execution.sandbox.limits import Limits
from execution.sandbox.pool import LocalJailBackend, PoolConfig
from execution.sandbox.protocol import FrameViolation
from execution.sandbox.transform import TransformedBundle, transform

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "security"
WEATHER = ROOT.parent / "shared" / "bundles" / "weather.mjs"
CONTEXT = {"sessionId": "session-1", "resourceId": "org_mallory"}
ATTACKS = ["fetchFlood", "logFlood", "hostErrorType", "deepLogs"]


def _invoke(bundle: TransformedBundle, agent: str, tool: str, key: str, limits: Limits) -> api.InvokeResult:
    return api.invoke(
        bundle,
        agent=agent,
        tool=tool,
        input={},
        context=CONTEXT,
        env={},
        egress=EgressPolicy(),
        limits=limits,
        bundle_key=key,
    )


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        stack.extend((child, level + 1) for child in children)
    return deepest


def assert_contained(answer: dict[str, Any], limits: Limits) -> None:
    """A call of a hostile bundle ended classified, within its limits, with its CPU metered."""
    error = answer["error"]
    assert answer["ok"] is (error is None)
    violation = error is not None and error["detail"].get("reason") == "protocol_violation"
    if error is not None:
        assert error["type"] in SANDBOX_CODES  # never a host-only code such as quota_exceeded
        if violation:
            assert error["type"] == "sandbox_crash"
            assert "forged" not in error["message"]  # the host's words, not the bundle's
    logs = answer["logs"]
    assert all(set(entry) == {"level", "message"} and isinstance(entry["message"], str) for entry in logs)
    assert sum(len(entry["message"]) for entry in logs) <= limits.log_bytes + 1024
    assert answer["usage"].get("fetches", 0) <= limits.max_fetches
    if error is None or violation:
        # Metering of other host-side endings (a call child that died) is tests/security/test_metering.py's.
        assert isinstance(answer["usage"].get("cpu_ms"), int)
    assert _depth(answer) <= MAX_FRAME_DEPTH


@pytest.fixture(scope="module")
def forged_bundle() -> TransformedBundle:
    return transform((FIXTURES / "forged_replies.mjs").read_bytes())


@pytest.mark.parametrize("tool", ATTACKS)
def test_forged_runtime_replies_end_classified_within_limits(
    forged_bundle: TransformedBundle, tool: str
) -> None:
    limits = Limits()
    result = _invoke(forged_bundle, "forger", tool, "org_mallory:v1", limits)
    assert_contained(result.to_dict(), limits)
    # The next call of another organization is unaffected.
    weather = transform(WEATHER.read_bytes())
    after = api.invoke(
        weather,
        agent="weather",
        tool="getWeather",
        input={"city": "Paris"},
        context={"sessionId": "s", "resourceId": "org_alice"},
        env={},
        egress=EgressPolicy(),
        limits=Limits(),
        bundle_key="org_alice:v1",
    )
    assert after.ok and after.output["city"] == "Paris", after.error


@pytest.mark.django_db
@pytest.mark.timeout(180)
def test_forged_replies_over_rest_answer_200_classified_and_metered(
    alice: Any, bob: Any, api: Any, settings: Any, tmp_path: Path
) -> None:
    from organizations.models import MonthlyUsage
    from tests.bundles import uploaded_version

    settings.MEDIA_ROOT = str(tmp_path / "media")
    uploaded_version(alice.organization, FIXTURES / "forged_replies.mjs", slug="forger")

    def metered() -> int:
        rows = MonthlyUsage.objects.filter(organization=alice.organization)
        return sum(rows.values_list("sandbox_cpu_ms", flat=True))

    before = metered()  # the upload's introspection is metered to alice too
    charged = 0
    for tool in ATTACKS:
        response = api.post(
            f"/api/v1/bundles/forger/tools/{tool}/invoke", json={"input": {}}, key=alice.keys["all"]
        )
        assert response.status_code == 200, response.content  # the RecursionError was a 500
        answer = response.json()
        assert_contained(answer, Limits())
        charged += answer["usage"]["cpu_ms"]
    assert metered() - before == charged > 0


# --- a lying runner process, started by the real pool ----------------------------------------------


def raw_frame(payload: bytes | str | dict[str, Any]) -> dict[str, str]:
    """A frame body for the fake runner, which frames it after replacing `"$ID"` by the call id."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return {"kind": "payload", "bytes": base64.b64encode(payload).decode()}


def raw_bytes(data: bytes) -> dict[str, str]:
    """Bytes the fake runner sends exactly as given."""
    return {"kind": "raw", "bytes": base64.b64encode(data).decode()}


USAGE = {"cpu_ms": 1, "wall_ms": 1, "peak_memory_bytes": 0, "fetches": 0}


def result(**fields: Any) -> dict[str, Any]:
    return {"type": "result", "id": "$ID", "ok": True, "output": None, "logs": [], "usage": USAGE, **fields}


def fetch(fetch_id: int) -> dict[str, Any]:
    request = {"url": f"http://127.0.0.1:9/{fetch_id}", "method": "GET", "headers": [], "body_b64": None}
    return {"type": "fetch", "id": "$ID", "fetch_id": fetch_id, "request": request}


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


FORGERIES: dict[str, tuple[list[dict[str, str]], Limits]] = {
    "logs nested 3000 deep": (
        [raw_frame('{"type":"result","id":"$ID","ok":true,"output":1,"logs":' + deep(3000) + ',"usage":{}}')],
        Limits(),
    ),
    "16 MB of logs": (
        [raw_frame(result(logs=[{"level": "log", "message": "x" * 262144}] * 64))],
        Limits(),
    ),
    "logs past log_bytes in a small frame": (
        [raw_frame(result(logs=[{"level": "log", "message": "x" * 9000}] * 2))],
        Limits(log_bytes=8192),
    ),
    "host-only error type": (
        [raw_frame({"type": "error", "id": "$ID", "error": {"type": "quota_exceeded", "message": "m"}})],
        Limits(),
    ),
    "invented error type in a result": (
        [raw_frame(result(ok=False, error={"type": "root_shell", "message": "m", "detail": {}}))],
        Limits(),
    ),
    "fetches past max_fetches": ([raw_frame(fetch(i)) for i in (1, 2, 3)], Limits(max_fetches=2)),
    "a fetch id twice": ([raw_frame(fetch(1)), raw_frame(fetch(1))], Limits()),
    "a fetch id that is not a number": (
        [raw_frame({**fetch(1), "fetch_id": "one"})],
        Limits(),
    ),
    "cpu_ms that is a string": ([raw_frame(result(usage={"cpu_ms": "lots"}))], Limits()),
    "output past output_bytes": ([raw_frame(result(output="y" * 40000))], Limits(output_bytes=16384)),
    "NaN output": (
        [raw_frame('{"type":"result","id":"$ID","ok":true,"output":NaN,"logs":[],"usage":{}}')],
        Limits(),
    ),
    "an integer JS cannot write": (
        [raw_frame('{"type":"result","id":"$ID","ok":true,"output":' + "9" * 40 + ',"logs":[],"usage":{}}')],
        Limits(),
    ),
    "not UTF-8": ([raw_frame(b'{"type":"log","message":"\xff\xfe"}')], Limits()),
    "a frame for another call": ([raw_frame({**result(), "id": 999})], Limits()),
    "an unknown frame type": ([raw_frame({"type": "exec", "id": "$ID", "argv": ["sh"]})], Limits()),
    "a frame longer than the call allows": (
        [raw_bytes(struct.pack(">I", 60 * 1024 * 1024) + b"{")],
        Limits(),
    ),
    "a frame cut short, then silence": (
        [raw_bytes(struct.pack(">I", 100) + b'{"type":')],
        Limits(wall_ms=1000),
    ),
    "a log frame flood": ([raw_frame({"type": "log", "level": "info", "message": "spam"})] * 40, Limits()),
}


@pytest.fixture
def lying_pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[LocalJailBackend, Path]]:
    frames, _ = FORGERIES[request.param]
    scenario = tmp_path / "scenario.json"
    pids = tmp_path / "pids"
    scenario.write_text(
        json.dumps(
            {
                "frames": frames,
                "marker": str(tmp_path / "forged"),
                "pids": str(pids),
            }
        )
    )
    script = tmp_path / "runner.sh"
    script.write_text(
        f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests/security/fake_runner.py'} {scenario}\n"
    )
    script.chmod(0o755)
    pool = LocalJailBackend(PoolConfig(workers=1, python=str(script), runner="python", jail=JailConfig()))
    try:
        yield pool, pids
    finally:
        pool.shutdown()


@pytest.mark.parametrize("lying_pool", sorted(FORGERIES), indirect=True)
def test_forged_frames_end_the_call_classified_and_kill_the_runner(
    lying_pool: tuple[LocalJailBackend, Path], request: pytest.FixtureRequest
) -> None:
    pool, pids = lying_pool
    _, limits = FORGERIES[request.node.callspec.params["lying_pool"]]
    first = _pool_invoke(pool, limits)
    assert first.ok is False and first.error is not None
    assert first.error["type"] == "sandbox_crash"
    assert first.error["detail"] == {"reason": "protocol_violation"}
    assert first.error["message"].startswith("the sandbox broke the runner protocol")
    assert isinstance(first.usage["cpu_ms"], int) and first.usage["cpu_ms"] <= limits.cpu_ms
    assert first.usage["host_enforced"] is True
    liar = int(pids.read_text().split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(liar, 0)  # killed and reaped, never reused
    # Its replacement (a fresh process) serves the next call.
    second = _pool_invoke(pool, Limits())
    assert second.ok is True and second.output == {"honest": True}
    assert int(pids.read_text().split()[-1]) != liar


def _pool_invoke(pool: LocalJailBackend, limits: Limits) -> api.InvokeResult:
    api.register_backend("lying-test", lambda: pool)
    bundle = SimpleNamespace(script="", sha256="0" * 64, bytes=0)  # the fake runner loads anything
    return api.invoke(
        bundle,
        agent="a",
        tool="t",
        input={},
        context=CONTEXT,
        env={},
        egress=EgressPolicy(),
        limits=limits,
        bundle_key="org_mallory:v1",
        backend="lying-test",
    )


# --- the validator itself ----------------------------------------------------------------------------


def _frames(request: str = "invoke", limits: Limits | None = None) -> RunnerFrames:
    return RunnerFrames(call_id=7, request=request, limits=limits or Limits())


def test_an_honest_invoke_result_passes_with_unknown_keys_dropped() -> None:
    payload = json.dumps(
        {
            "type": "result",
            "id": 7,
            "ok": True,
            "output": {"a": [1, 2.5, "x", None, True]},
            "logs": [{"level": "info", "message": "hi", "extra": 1}],
            "usage": {"cpu_ms": 3, "wall_ms": 4, "peak_memory_bytes": 10, "fetches": 99},
            "injected": "dropped",
        }
    ).encode()
    frame = _frames().check(payload)
    assert frame == {
        "type": "result",
        "id": 7,
        "ok": True,
        "output": {"a": [1, 2.5, "x", None, True]},
        "error": None,
        "logs": [{"level": "info", "message": "hi"}],
        "usage": {"cpu_ms": 3, "wall_ms": 4, "peak_memory_bytes": 10, "fetches": 0},  # the host's count
    }


def test_depth_is_checked_before_parsing_and_strings_do_not_count() -> None:
    check_depth(b'{"a":"' + b"[" * 100000 + b'"}')  # brackets inside a string are text
    check_depth(deep(MAX_FRAME_DEPTH).encode())
    with pytest.raises(FrameViolation):
        check_depth(deep(MAX_FRAME_DEPTH + 1).encode())
    with pytest.raises(FrameViolation):
        check_depth(b'{"s":"\\"[","d":' + deep(300).encode() + b"}")  # an escaped quote does not end it
    # Far deeper than Python's recursion limit: refused without recursing.
    with pytest.raises(FrameViolation):
        _frames().check(b'{"type":"result","id":7,"ok":true,"output":' + deep(200000).encode() + b"}")


@pytest.mark.parametrize(
    "error",
    [
        {"type": "quota_exceeded", "message": "m"},
        {"type": "rate_limited", "message": "m"},
        {"type": "tool_error", "message": "m" * 20000},
        {"type": "tool_error", "message": "m", "detail": []},
        {"type": "tool_error", "message": "m", "detail": {"x": "y" * 300000}},
        {"type": 5, "message": "m"},
    ],
)
def test_error_frames_outside_the_sandbox_set_or_sizes_are_violations(error: dict[str, Any]) -> None:
    with pytest.raises(FrameViolation):
        _frames().check(json.dumps({"type": "error", "id": 7, "error": error}).encode())


@pytest.mark.parametrize("code", sorted(SANDBOX_CODES))
def test_every_sandbox_code_passes(code: str) -> None:
    frame = _frames().check(
        json.dumps({"type": "error", "id": 7, "error": {"type": code, "message": "m"}}).encode()
    )
    assert frame["error"] == {"type": code, "message": "m", "detail": {}}


def test_fetch_frames_only_in_calls_and_load_results_only_ok() -> None:
    with pytest.raises(FrameViolation):
        _frames("load").check(json.dumps({**fetch(1), "id": 7}).encode())
    with pytest.raises(FrameViolation):
        _frames("load").check(b'{"type":"result","id":7,"ok":false}')
    assert _frames("load").check(b'{"type":"result","id":7,"ok":true,"cached":true}')["cached"] is True
    with pytest.raises(FrameViolation):
        _frames("introspect").check(b'{"type":"result","id":7,"ok":true,"manifest":[]}')


def _introspect_frame(model: Any) -> bytes:
    manifest = {"metadata": {}, "agents": {"a": {"name": "a", "model": model, "tools": {}}}, "warnings": []}
    return json.dumps({"type": "result", "id": 7, "ok": True, "manifest": manifest}).encode()


def test_manifest_models_keep_provider_id_and_base_url_only() -> None:
    model = {"provider": "openai.responses", "id": "gpt-4o", "baseURL": "https://x.example/v1", "key": "sk"}
    checked = _frames("introspect").check(_introspect_frame(model))["manifest"]["agents"]["a"]["model"]
    assert checked == {"provider": "openai.responses", "id": "gpt-4o", "baseURL": "https://x.example/v1"}
    plain = _frames("introspect").check(_introspect_frame({"provider": "gateway", "id": "openai/gpt-4o"}))
    assert plain["manifest"]["agents"]["a"]["model"] == {"provider": "gateway", "id": "openai/gpt-4o"}


@pytest.mark.parametrize(
    "model",
    [
        None,
        "openai/gpt-4o",
        {"provider": "openai.chat"},
        {"provider": "openai.chat", "id": 5},
        {"provider": "openai.chat", "id": "gpt-4o", "baseURL": ["https://x"]},
        {"provider": "openai.chat", "id": "gpt-4o", "baseURL": "https://x/" + "a" * 5000},
    ],
)
def test_manifest_models_of_the_wrong_shape_are_violations(model: Any) -> None:
    with pytest.raises(FrameViolation):
        _frames("introspect").check(_introspect_frame(model))


def test_fetches_in_flight_are_counted_by_the_host() -> None:
    frames = _frames(limits=Limits(concurrent_fetches=2, fetch_timeout_ms=10000))
    for fetch_id in (1, 2):
        frames.check(json.dumps({**fetch(fetch_id), "id": 7}).encode(), pending=[])
    with pytest.raises(FrameViolation):
        frames.check(json.dumps({**fetch(3), "id": 7}).encode(), pending=[1, 2])
    # Once the host answered one of them, another may start.
    frames = _frames(limits=Limits(concurrent_fetches=2))
    frames.check(json.dumps({**fetch(1), "id": 7}).encode(), pending=[])
    frames.check(json.dumps({**fetch(2), "id": 7}).encode(), pending=[1])
    assert frames.check(json.dumps({**fetch(3), "id": 7}).encode(), pending=[2])["fetch_id"] == 3
