"""The in-process engine on well-behaved bundles: loading, manifests, tool calls, globals, fetch, timers."""

from __future__ import annotations

import os

import pytest

from execution.sandbox.engine import Engine
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.transform import transform
from tests.execution.sandbox.engine_harness import (
    CONTEXT,
    CancellingHost,
    CannedHost,
    invoke_in_fork,
    loaded_engine,
    native_requested,
)


@pytest.fixture(scope="module")
def weather() -> Engine:
    return loaded_engine("weather.mjs")


@pytest.fixture(scope="module")
def helpdesk() -> Engine:
    return loaded_engine("multi-agent.mjs")


@pytest.fixture(scope="module")
def web() -> Engine:
    return loaded_engine("web-globals.mjs", env={"REGION": "eu-west", "API_BASE": "https://api.example.com"})


def _load_error(source: bytes, **kwargs: object) -> SandboxError:
    engine = Engine()
    with pytest.raises(SandboxError) as info:
        engine.load(transform(source).script, env={}, **kwargs)  # type: ignore[arg-type]
    return info.value


# ---------------------------------------------------------------- manifests


def test_weather_manifest(weather):
    manifest = weather.introspect()
    assert manifest["metadata"] == {
        "name": "weather-demo",
        "version": "1.0.0",
        "description": "Weather agent with two tools",
    }
    agent = manifest["agents"]["weather"]
    assert agent["name"] == "weather"
    assert agent["system"].startswith("You are a concise weather assistant.")
    assert agent["model"] == {"provider": "gateway", "id": "openai/gpt-4o-mini"}
    assert agent["dynamicTools"] is False
    get_weather = agent["tools"]["getWeather"]
    assert get_weather["description"] == "Get the current weather for a city"
    assert get_weather["inputSchema"]["type"] == "object"
    assert get_weather["inputSchema"]["required"] == ["city"]
    assert get_weather["inputSchema"]["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert get_weather["inputSchema"]["properties"]["city"]["description"] == "City name, e.g. Paris"
    assert get_weather["outputSchema"] is None
    assert set(agent["tools"]) == {"getWeather", "convertTemperature"}
    assert manifest["warnings"] == []


def test_multi_agent_manifest(helpdesk):
    manifest = helpdesk.introspect()
    assert manifest["metadata"]["name"] == "helpdesk"
    support, ops = manifest["agents"]["support"], manifest["agents"]["ops"]
    assert support["model"] == {"provider": "gateway", "id": "anthropic/claude-3-5-haiku"}
    assert support["options"] == {"stopWhen": {"stepCount": 5}}
    search = support["tools"]["searchKnowledgeBase"]
    assert search["inputSchema"]["properties"]["limit"]["maximum"] == 10
    assert search["outputSchema"]["properties"]["results"]["type"] == "array"
    assert support["tools"]["createTicket"]["inputSchema"]["properties"]["email"]["format"] == "email"
    assert ops["dynamicTools"] is True
    assert list(ops["tools"]) == ["fetchStatus"]


def test_manifest_options_models_and_warnings(web):
    manifest = web.introspect()
    agent = manifest["agents"]["web"]
    assert agent["model"] == {"provider": "openai", "id": "gpt-4o"}
    assert agent["options"]["temperature"] == 0.2
    assert agent["options"]["stopWhen"] == [{"stepCount": 3}, {"hasToolCall": "text"}]
    assert any("onFinish" in warning for warning in manifest["warnings"])
    assert agent["tools"]["v3tool"]["inputSchema"]["properties"]["tags"]["maxItems"] == 2
    sdk = manifest["agents"]["sdk"]
    assert sdk["model"] == {"provider": "anthropic", "id": "claude-3-5-haiku"}
    assert sdk["tools"]["plain"]["inputSchema"]["required"] == ["q"]


def test_single_agent_default_export_and_named_exports():
    single = b"""import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
var ping = createTool({ description: "ping", inputSchema: z.object({}), execute: () => "pong" });
export default createAgent({ name: "solo", system: "s", model: "demo", tools: { ping } });
"""
    engine = Engine()
    engine.load(transform(single).script, env={})
    manifest = engine.introspect()
    assert list(manifest["agents"]) == ["solo"]
    assert manifest["agents"]["solo"]["model"] == {"provider": "demo", "id": "demo"}
    assert invoke_in_fork(engine, agent="solo", tool="ping")["output"] == "pong"

    named = b"""import { createAgent } from "lightfast/agent";
export const first = createAgent({ name: "one", system: "a", model: "openai/gpt-4o" });
export const second = createAgent({ name: "two", system: "b", model: "openai/gpt-4o" });
export const notAnAgent = 42;
"""
    engine = Engine()
    engine.load(transform(named).script, env={})
    assert set(engine.introspect()["agents"]) == {"first", "second"}


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("hostile/no-agents.mjs", "at least one agent"),
        ("hostile/no-default-export.mjs", "no default export"),
    ],
)
def test_bundles_without_agents_are_invalid(name, fragment):
    from tests.execution.sandbox.engine_harness import bundle_bytes

    error = _load_error(bundle_bytes(name))
    assert error.code == "invalid_bundle"
    assert fragment in error.message


def test_top_level_throw_is_an_invalid_bundle():
    error = _load_error(
        b'import { z } from "zod";\nthrow new TypeError("config missing");\nexport default z;\n'
    )
    assert error.code == "invalid_bundle"
    assert "config missing" in error.message


def test_top_level_loop_hits_the_load_limit():
    from tests.execution.sandbox.engine_harness import bundle_bytes

    engine = Engine()
    with pytest.raises(SandboxError) as info:
        engine.load(
            transform(bundle_bytes("hostile/toplevel-loop.mjs")).script,
            env={},
            limits=Limits(cpu_ms=200, wall_ms=1000),
        )
    assert info.value.code == "cpu_limit"
    assert engine.broken


@pytest.mark.skipif(
    native_requested(),
    reason="the one-load/one-invoke contract of the in-process Python Engine class; "
    "the native runner has no such object (its zygote restores the heap after every call by construction)",
)
def test_an_engine_loads_one_bundle_and_runs_one_call(weather):
    with pytest.raises(RuntimeError):
        weather.load("(function(){})", env={})
    engine = loaded_engine("weather.mjs")
    engine.invoke(
        agent="weather",
        tool="getWeather",
        input={"city": "Oslo"},
        context=CONTEXT,
        limits=Limits(),
        host=CannedHost(),
    )
    with pytest.raises(RuntimeError):
        engine.invoke(
            agent="weather",
            tool="getWeather",
            input={"city": "Oslo"},
            context=CONTEXT,
            limits=Limits(),
            host=CannedHost(),
        )


# ---------------------------------------------------------------- calls


def test_get_weather_runs_with_context_and_logs(weather):
    result = invoke_in_fork(weather, agent="weather", tool="getWeather", input={"city": "Paris"})
    assert result["ok"] is True, result
    assert result["output"] == {
        "city": "Paris",
        "temperature": 3,
        "unit": "celsius",
        "condition": "snow",
        "requestedBy": "org_public_1",
    }
    assert result["logs"] == [
        {"level": "log", "message": "weather lookup for Paris in session session-0123456789"}
    ]
    usage = result["usage"]
    assert set(usage) == {"cpu_ms", "wall_ms", "peak_memory_bytes", "fetches"}
    assert usage["peak_memory_bytes"] > 1_000_000
    assert usage["fetches"] == 0
    assert result["broken"] is False


def test_zod_defaults_and_sync_tools(weather):
    result = invoke_in_fork(
        weather, agent="weather", tool="getWeather", input={"city": "Paris", "unit": "fahrenheit"}
    )
    assert result["output"]["temperature"] == 37
    converted = invoke_in_fork(
        weather, agent="weather", tool="convertTemperature", input={"value": 100, "from": "celsius"}
    )
    assert converted["output"] == {"value": 212, "unit": "fahrenheit"}


def test_bad_input_is_invalid_input_with_zod_issues(weather):
    result = invoke_in_fork(weather, agent="weather", tool="getWeather", input={"city": "", "unit": "kelvin"})
    assert result["ok"] is False
    assert result["error"]["type"] == "invalid_input"
    issues = result["error"]["detail"]["issues"]
    assert {tuple(issue["path"]) for issue in issues} == {("city",), ("unit",)}
    assert all("message" in issue and "code" in issue for issue in issues)


def test_unknown_agent_and_tool(weather):
    no_agent = invoke_in_fork(weather, agent="nobody", tool="getWeather")
    assert no_agent["error"]["type"] == "unknown_tool"
    assert no_agent["error"]["detail"]["agents"] == ["weather"]
    no_tool = invoke_in_fork(weather, agent="weather", tool="launchRockets")
    assert no_tool["error"]["type"] == "unknown_tool"
    assert sorted(no_tool["error"]["detail"]["tools"]) == ["convertTemperature", "getWeather"]


def test_input_that_is_not_json_is_invalid_input(weather):
    result = invoke_in_fork(weather, agent="weather", tool="getWeather", input={"city": float("nan")})
    assert result["error"]["type"] == "invalid_input"


def test_multi_agent_tools(helpdesk):
    found = invoke_in_fork(helpdesk, agent="support", tool="searchKnowledgeBase", input={"query": "password"})
    assert found["output"] == {"results": [{"id": "kb-1", "title": "Resetting your password"}]}
    ticket = invoke_in_fork(
        helpdesk,
        agent="support",
        tool="createTicket",
        input={"subject": "Locked out", "priority": "high", "email": "ana@example.com"},
    )
    assert ticket["output"] == {
        "ticketId": "T-session-",
        "status": "open",
        "subject": "Locked out",
        "priority": "high",
        "email": "ana@example.com",
    }
    bad = invoke_in_fork(
        helpdesk,
        agent="support",
        tool="createTicket",
        input={"subject": "x", "priority": "urgent", "email": "nope"},
    )
    assert bad["error"]["type"] == "invalid_input"
    assert {issue["path"][0] for issue in bad["error"]["detail"]["issues"]} == {"priority", "email"}


def test_dynamic_tools_fetch_through_the_host(helpdesk):
    host = CannedHost({"https://status.example.com/api.json": (200, b'{"status": "operational"}')})
    result = invoke_in_fork(
        helpdesk,
        host=host,
        agent="ops",
        tool="fetchStatus",
        input={"url": "https://status.example.com/api.json"},
    )
    assert result["ok"] is True, result
    assert result["output"] == {"status": 200, "body": {"status": "operational"}}
    request = result["host"]["requests"][0]
    assert request["url"] == "https://status.example.com/api.json"
    assert request["method"] == "GET"
    assert ["accept", "application/json"] in request["headers"]
    assert result["usage"]["fetches"] == 1


def test_fetch_sends_method_headers_and_body(web):
    host = CannedHost({"https://api.example.com/echo": (201, b'{"created": 1}')})
    result = invoke_in_fork(
        web, host=host, agent="web", tool="fetcher", input={"url": "https://api.example.com/echo"}
    )
    assert result["output"] == {"status": 201, "ok": True, "type": "application/json", "json": {"created": 1}}
    request = result["host"]["requests"][0]
    assert request["method"] == "POST"
    assert ["x-test", "1"] in request["headers"]
    assert ["content-type", "text/plain;charset=UTF-8"] in request["headers"]
    import base64

    assert base64.b64decode(request["body_b64"]) == b'{"hi":1}'


def test_concurrent_fetches_are_capped(web):
    result = invoke_in_fork(web, agent="web", tool="parallel", limits=Limits(concurrent_fetches=3))
    assert result["ok"] is True, result
    assert len(result["output"]) == 10
    assert result["host"]["max_in_flight"] == 3


def test_text_encoding_and_base64(web):
    out = invoke_in_fork(web, agent="web", tool="text")["output"]
    assert bytes(out["bytes"]) == "héllo €😀".encode()
    assert out["back"] == "héllo €😀"
    assert out["b64"] == "aGVsbG8=" and out["unb64"] == "hello"


def test_urls(web):
    out = invoke_in_fork(web, agent="web", tool="urls")["output"]
    # Appending re-serializes the query as form data, as in browsers and Node.
    assert out["href"] == "https://example.com/b/c?x=1&y=two+words&z=3#frag"
    assert out["host"] == "example.com"
    assert out["pathname"] == "/b/c"
    assert out["x"] == "1"
    assert out["params"] == "q=a+b&n=1"
    assert out["invalid"] == "TypeError"
    assert out["origin"] == "http://h.example:8080"
    assert out["canParse"] is True


def test_timers_fire_in_order_and_can_be_cleared(web):
    out = invoke_in_fork(web, agent="web", tool="timers")["output"]
    assert out == {"order": ["a", "b"], "ticks": 3}


def test_structured_clone(web):
    assert invoke_in_fork(web, agent="web", tool="clone")["output"] == {
        "same": False,
        "selfOk": True,
        "a": [1, {"b": 2}],
        "d": "1970-01-01T00:00:00.000Z",
        "m": 1,
    }


def test_top_level_code_sees_env_and_the_sandbox_buffer(web):
    # Buffer is the sandbox's own lazy global (npm `buffer`, as Cloudflare's nodejs_compat offers it).
    assert invoke_in_fork(web, agent="web", tool="atLoad")["output"] == {
        "bufferType": "function",
        "hasFetch": "function",
        "region": "eu-west",
    }


def test_zod_v3_schema_validation(web):
    ok = invoke_in_fork(web, agent="web", tool="v3tool", input={"when": "now", "tags": ["a"]})
    assert ok["output"] == {"when": "now", "tags": ["a"]}
    bad = invoke_in_fork(web, agent="web", tool="v3tool", input={"when": 1, "tags": ["a", "b", "c"]})
    assert bad["error"]["type"] == "invalid_input"
    assert {issue["code"] for issue in bad["error"]["detail"]["issues"]} == {"invalid_type", "too_big"}


def test_ai_sdk_tool_with_json_schema(web):
    assert invoke_in_fork(web, agent="sdk", tool="plain", input={"q": "hi"})["output"] == {"echoed": "hi"}


def test_cancel_from_the_host_ends_the_call(helpdesk):
    result = invoke_in_fork(
        helpdesk,
        host=CancellingHost(),
        agent="support",
        tool="createTicket",
        input={"subject": "x", "priority": "low", "email": "a@example.com"},
    )
    assert result["error"]["type"] == "cancelled"
    assert result["broken"] is True


def test_engine_without_runtime_build_fails_clearly(monkeypatch, tmp_path):
    from execution.sandbox import engine as engine_module

    monkeypatch.setattr(engine_module, "RUNTIME_PATH", tmp_path / "missing.js")
    with pytest.raises(SandboxError) as info:
        Engine()
    assert "build:runtime" in info.value.message


def test_fork_children_do_not_share_state_with_each_other(weather):
    # Two calls from the same loaded engine in sequence both see a pristine heap.
    first = invoke_in_fork(weather, agent="weather", tool="getWeather", input={"city": "Rome"})
    second = invoke_in_fork(weather, agent="weather", tool="getWeather", input={"city": "Rome"})
    assert first["output"] == second["output"]
    assert first["logs"] == second["logs"]
    assert os.getpid() > 0
