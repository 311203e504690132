"""The sandbox entry point end to end: real bundles through the jailed pool (`local` backend)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.transform import TransformedBundle, transform
from tests.egress_servers import ca_file_for_tests, serve

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT.parent / "shared" / "bundles"
FIXTURES = ROOT / "tests" / "fixtures" / "sandbox"
SECRET = "sk-api-secret-4242"
CONTEXT = {"sessionId": "session-1", "resourceId": "org_alice"}


def _bundle(path: Path) -> TransformedBundle:
    return transform(path.read_bytes())


def _invoke(bundle: TransformedBundle, agent: str, tool: str, input: Any, **extra: Any) -> api.InvokeResult:
    options: dict[str, Any] = {
        "context": CONTEXT,
        "env": {},
        "egress": EgressPolicy(),
        "limits": Limits(),
        "bundle_key": "org_alice:v1",
    }
    options.update(extra)
    return api.invoke(bundle, agent=agent, tool=tool, input=input, **options)


def test_weather_manifest_is_complete() -> None:
    bundle = _bundle(SAMPLES / "weather.mjs")
    manifest = api.introspect(bundle)
    assert manifest["sha256"] == bundle.sha256 and manifest["bytes"] == bundle.bytes
    assert manifest["metadata"] == {
        "name": "weather-demo",
        "version": "1.0.0",
        "description": "Weather agent with two tools",
    }
    agent = manifest["agents"]["weather"]
    assert agent["model"] == {"provider": "gateway", "id": "openai/gpt-4o-mini"}
    schema = agent["tools"]["getWeather"]["inputSchema"]
    assert schema["type"] == "object" and schema["required"] == ["city"]
    assert schema["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert set(agent["tools"]) == {"getWeather", "convertTemperature"}


def test_multi_agent_manifest() -> None:
    manifest = api.introspect(_bundle(SAMPLES / "multi-agent.mjs"))
    assert len(manifest["agents"]) >= 2
    for agent in manifest["agents"].values():
        assert agent["model"]["id"]
        for tool in agent["tools"].values():
            assert tool["inputSchema"]["type"] == "object"


def test_weather_tools_run_with_correct_outputs() -> None:
    bundle = _bundle(SAMPLES / "weather.mjs")
    result = _invoke(bundle, "weather", "getWeather", {"city": "Paris"})
    assert result.ok, result.error
    assert result.output == {
        "city": "Paris",
        "temperature": 3,
        "unit": "celsius",
        "condition": "snow",
        "requestedBy": "org_alice",
    }
    assert result.logs[0]["message"] == "weather lookup for Paris in session session-1"
    assert result.usage["cpu_ms"] >= 0 and result.usage["peak_memory_bytes"] > 0
    converted = _invoke(bundle, "weather", "convertTemperature", {"value": 100, "from": "celsius"})
    assert converted.output == {"value": 212, "unit": "fahrenheit"}
    assert converted.to_dict()["error"] is None


def test_zod_rejects_bad_input_as_invalid_input() -> None:
    result = _invoke(_bundle(SAMPLES / "weather.mjs"), "weather", "getWeather", {"city": ""})
    assert not result.ok
    assert result.error is not None and result.error["type"] == "invalid_input"
    assert result.error["detail"]["issues"][0]["path"] == ["city"]


def test_unknown_tool_is_classified() -> None:
    result = _invoke(_bundle(SAMPLES / "weather.mjs"), "weather", "launchMissiles", {})
    assert result.error is not None and result.error["type"] == "unknown_tool"


HOSTILE = (SAMPLES / "hostile" / "tools.mjs").read_text()
HOSTILE_TOOLS = re.findall(r"^  (\w+): t\(", HOSTILE, re.M)
EXPECTED = {
    "infiniteLoop": {"cpu_limit", "timeout"},
    "asyncInfiniteLoop": {"cpu_limit", "timeout"},
    "memoryBomb": {"memory_limit"},
    "bufferBomb": {"memory_limit", "tool_error"},
    "stringBomb": {"memory_limit", "tool_error"},
    "deepRecursion": {"stack_overflow"},
    "regexBomb": {"cpu_limit", "timeout"},
    "hugeOutput": {"output_limit", "memory_limit"},
    "logFlood": {"cpu_limit", "timeout", "output_limit"},
    "timerFlood": {"cpu_limit", "timeout", "memory_limit"},
    "neverResolves": {"timeout"},
    "fetchMetadata": {"egress_denied"},
    "fetchLoopback": {"egress_denied"},
    "fetchPrivate": {"egress_denied"},
    "trickyOutput": {"tool_error"},
    "throwsNonError": {"tool_error"},
}
HARMLESS = {
    "escapeProcess",
    "escapeRequire",
    "dynamicImport",
    "pollutePrototype",
    "checkPollution",
    "cyclicOutput",
    "badInput",
}


def test_hostile_tool_list_is_fully_covered() -> None:
    assert set(HOSTILE_TOOLS) == set(EXPECTED) | HARMLESS


@pytest.fixture(scope="module")
def hostile_bundle() -> TransformedBundle:
    """The hostile tools bundle, transformed once."""
    return _bundle(SAMPLES / "hostile" / "tools.mjs")


@pytest.mark.parametrize("tool", HOSTILE_TOOLS)
def test_hostile_tools_end_classified_within_their_limits(
    tool: str, hostile_bundle: TransformedBundle
) -> None:
    limits = Limits(cpu_ms=1000, wall_ms=2000, memory_mb=64)
    # A generous host-side bound only proves nothing hangs; the +100 ms budget is
    # checked on the sandbox's own usage figures, which load on the machine cannot skew.
    started = time.monotonic()
    result = _invoke(
        hostile_bundle,
        "hostile",
        tool,
        {"n": 2} if tool == "badInput" else {},
        limits=limits,
        bundle_key="org_mallory:v1",
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    assert elapsed_ms < limits.wall_ms + 1500
    if tool in HARMLESS:
        assert result.ok, result.error
    else:
        assert not result.ok
        assert result.error is not None and result.error["type"] in EXPECTED[tool], result.error
        if result.usage.get("host_enforced"):
            # The engine did not answer in time and the host's backstop (kill or RLIMIT_CPU) ended the call.
            assert result.error["type"] in {"timeout", "cpu_limit"}
        elif result.error["type"] == "cpu_limit":
            assert result.usage["cpu_ms"] <= limits.cpu_ms + 100
        elif result.error["type"] == "timeout":
            assert result.usage["wall_ms"] <= limits.wall_ms + 100
    if tool == "escapeProcess":
        assert result.output["env"] == []
    if tool == "escapeRequire":
        assert set(result.output.values()) <= {"blocked", "no require"}
    if tool == "dynamicImport":
        assert "blocked" in result.output
    if tool == "cyclicOutput":
        assert result.output == {"self": "[Circular]"}
    # Whatever happened, the pool serves the next call.
    assert _invoke(hostile_bundle, "hostile", "badInput", {"n": 21}, bundle_key="org_mallory:v1").output == 42


def test_pollution_never_reaches_the_next_call(hostile_bundle: TransformedBundle) -> None:
    for _ in range(3):  # several rounds, so both workers' zygotes see a polluting call
        assert _invoke(hostile_bundle, "hostile", "pollutePrototype", {}).output == "polluted"
    check = _invoke(hostile_bundle, "hostile", "checkPollution", {})
    assert check.output == {"polluted": None, "leak": None, "jsonOk": True}
    bad = _invoke(hostile_bundle, "hostile", "badInput", {"n": "x"})
    assert bad.error is not None and bad.error["type"] == "invalid_input"


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (SAMPLES / "hostile").glob("*.mjs") if p.name != "tools.mjs")
)
def test_other_hostile_files_fail_introspection_cleanly(name: str) -> None:
    path = SAMPLES / "hostile" / name
    with pytest.raises(SandboxError) as exc:
        api.introspect(transform(path.read_bytes()), limits=Limits(cpu_ms=1000, wall_ms=2000))
    assert exc.value.code in {"syntax_error", "invalid_bundle", "cpu_limit", "timeout"}
    assert exc.value.message


def test_every_call_starts_from_fresh_state_and_keys_do_not_share() -> None:
    bundle = _bundle(FIXTURES / "fetcher.mjs")
    alice = [
        _invoke(bundle, "probe", "state", {}, env={"GREETING": "hi alice"}, bundle_key="org_alice:v1")
        for _ in range(4)
    ]
    for result in alice:
        assert result.output == {"atLoad": "hi alice", "now": "hi alice", "counter": 1, "leftBehind": 1}
    bob = _invoke(bundle, "probe", "state", {}, env={"GREETING": "hi bob"}, bundle_key="org_bob:v1")
    assert bob.output == {"atLoad": "hi bob", "now": "hi bob", "counter": 1, "leftBehind": 1}


class _Echo(BaseHTTPRequestHandler):
    received: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).received.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"secret_arrived": self.headers.get("X-Api-Key") == SECRET}).encode()
        self.send_response(200)
        self.send_header("X-Api-Key", self.headers.get("X-Api-Key", ""))
        self.send_header("X-Plain", "visible")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[int]:
    """HTTPS server (test CA) on the host's loopback, reached only through the host's egress code."""
    _Echo.received = []
    with serve(_Echo, tls=True) as port:
        yield port


def test_fetch_from_js_uses_policy_and_secrets_stay_on_the_host(echo_server: int) -> None:
    bundle = _bundle(FIXTURES / "fetcher.mjs")
    policy = EgressPolicy(
        allow_hosts=["localhost"],
        secret_headers={f"localhost:{echo_server}": {"X-Api-Key": SECRET}},
        unsafe_allow_loopback_for_tests=True,
        unsafe_ca_file_for_tests=ca_file_for_tests(),
    )
    url = f"https://localhost:{echo_server}/x"
    result = _invoke(bundle, "probe", "fetchUrl", {"url": url}, egress=policy)
    assert result.ok, result.error
    assert result.output["status"] == 200
    assert json.loads(result.output["body"]) == {"secret_arrived": True}
    assert result.output["headers"]["x-plain"] == "visible"
    assert SECRET not in json.dumps(result.to_dict())
    assert _Echo.received[-1]["x-from-js"] == "yes"
    assert result.usage["fetches"] == 1


def test_fetch_denied_rejects_inside_js(echo_server: int) -> None:
    bundle = _bundle(FIXTURES / "fetcher.mjs")
    production_like = EgressPolicy(allow_hosts=["localhost"])  # loopback stays denied without the test flag
    result = _invoke(
        bundle, "probe", "fetchUrl", {"url": f"https://localhost:{echo_server}/"}, egress=production_like
    )
    assert result.ok
    assert "loopback" in result.output["rejected"]
    assert _Echo.received == []


def test_cancel_event_stops_a_call() -> None:
    bundle = _bundle(SAMPLES / "hostile" / "tools.mjs")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    result = _invoke(
        bundle, "hostile", "infiniteLoop", {}, limits=Limits(cpu_ms=20_000, wall_ms=30_000), cancel=cancel
    )
    assert result.error is not None and result.error["type"] == "cancelled"
    assert time.monotonic() - started < 1.3


def test_unknown_backend_is_a_classified_error() -> None:
    result = _invoke(
        _bundle(SAMPLES / "weather.mjs"), "weather", "getWeather", {"city": "Paris"}, backend="nonesuch"
    )
    assert result.error is not None and result.error["type"] == "sandbox_crash"
    assert "nonesuch" in result.error["message"]


def test_status_for_healthz(sandbox_backend: str) -> None:
    _invoke(_bundle(SAMPLES / "weather.mjs"), "weather", "getWeather", {"city": "Paris"})
    status = api.sandbox_status()
    assert status["backend"] == sandbox_backend and status["started"] is True
    assert status["engine"] == "ok"
