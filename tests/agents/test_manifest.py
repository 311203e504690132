"""`BundleVersion.agent(key)`: the one typed read of a version's manifest."""

from __future__ import annotations

from agents.models import AgentManifest, BundleVersion

MANIFEST = {
    "agents": {
        "weather": {
            "name": "Weather",
            "system": "You report the weather.",
            "model": {"provider": "openai.responses", "id": "gpt-4o-mini", "base_url": "https://llm.test/v1"},
            "tools": {"getWeather": {"description": "Weather of a city", "inputSchema": {"type": "object"}}},
            "options": {"stopWhen": {"stepCount": 3}},
            "somethingNew": {"the platform": "ignores it"},
        },
        "echo": {"model": "demo", "dynamicTools": True, "stopWhen": {"stepCount": 0}, "tools": "not a dict"},
    },
    "version": 2,
}


def test_an_agent_reads_its_fields_and_keeps_the_model_as_declared():
    agent = BundleVersion(manifest=MANIFEST).agent("weather")
    assert agent == AgentManifest(
        key="weather",
        name="Weather",
        system="You report the weather.",
        model=MANIFEST["agents"]["weather"]["model"],
        tools=MANIFEST["agents"]["weather"]["tools"],
        dynamic_tools=False,
        step_count=3,
    )
    assert agent.tool_names == ["getWeather"] and agent.has_tool("getWeather") and not agent.has_tool("x")


def test_missing_or_malformed_parts_read_as_empty():
    version = BundleVersion(manifest=MANIFEST)
    echo = version.agent("echo")
    assert echo is not None
    assert (echo.name, echo.tools, echo.step_count, echo.dynamic_tools) == ("echo", {}, None, True)
    assert echo.has_tool("anything")  # dynamic tools
    assert version.agent("nope") is None
    assert list(version.agents()) == ["echo", "weather"]
    for manifest in (None, {}, {"agents": ["weather"]}, "garbage"):
        assert BundleVersion(manifest=manifest).agents() == {}
