"""Options made with an inlined AI SDK (no WeakMap-registered runtime copies) are honoured, not dropped.

The fixture carries the AI SDK's own stepCountIs/hasToolCall/jsonSchema code and provider model
shapes (tests/fixtures/sandbox/inlined-ai-shapes.mjs); the real packages go through the real-world
corpus. Conditions are recognised by behaviour only when the fingerprint is unambiguous.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.execution.sandbox.engine_harness import invoke_in_fork, loaded_engine

CUSTOM = "a custom stopWhen condition cannot run on the platform and is ignored"


@pytest.fixture(scope="module")
def engine() -> Any:
    return loaded_engine("inlined-ai-shapes.mjs")


@pytest.fixture(scope="module")
def manifest(engine: Any) -> dict[str, Any]:
    result: dict[str, Any] = engine.introspect()
    return result


def test_inlined_stop_conditions_are_recognised(manifest: dict[str, Any]) -> None:
    agents = manifest["agents"]
    assert agents["recognised"]["options"] == {"stopWhen": [{"stepCount": 7}, {"hasToolCall": "answer"}]}
    assert agents["single"]["options"] == {"stopWhen": {"hasToolCall": "lookup"}}
    assert agents["counted"]["options"] == {"stopWhen": {"stepCount": 1}}


def test_ambiguous_conditions_stay_custom_and_are_reported(manifest: dict[str, Any]) -> None:
    assert manifest["agents"]["decoys"]["options"] == {"stopWhen": [{"stepCount": 9}]}
    assert manifest["warnings"] == [f"agent decoys: {CUSTOM}"] * 6


def test_inlined_json_schema_is_the_schema_not_an_empty_object(manifest: dict[str, Any]) -> None:
    tools = manifest["agents"]["recognised"]["tools"]
    assert tools["lookup"]["inputSchema"] == {
        "type": "object",
        "properties": {
            "orderId": {"type": "string", "pattern": "^ord_[0-9]+$"},
            "verbose": {"type": "boolean", "default": False},
        },
        "required": ["orderId"],
        "additionalProperties": False,
    }
    assert tools["answer"]["inputSchema"]["required"] == ["text"]


def test_models_keep_provider_and_base_url_without_reading_headers(manifest: dict[str, Any]) -> None:
    agents = manifest["agents"]
    assert agents["recognised"]["model"] == {
        "provider": "openai.responses",
        "id": "support-model",
        "baseURL": "https://llm.internal.example.com/v1",
    }
    assert agents["single"]["model"] == {
        "provider": "anthropic.messages",
        "id": "claude-3-5-haiku-latest",
        "baseURL": "https://claude-proxy.example.com/v1",
    }
    assert "headers() read" not in str(manifest)


def test_inlined_json_schema_validate_runs_before_the_tool(engine: Any) -> None:
    ok = invoke_in_fork(engine, agent="recognised", tool="lookup", input={"orderId": "ord_42"})
    assert ok["ok"] and ok["output"] == {"seen": {"verbose": False, "orderId": "ord_42"}}
    refused = invoke_in_fork(engine, agent="recognised", tool="lookup", input={"orderId": "42"})
    assert not refused["ok"] and refused["error"]["type"] == "invalid_input"
    assert "ord_123" in refused["error"]["message"] or "ord_123" in str(refused["error"].get("detail"))
