"""Introspection through a real Celery worker and the real sandbox, and direct tool calls on the result."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agents.demo import demo_bundle_ensure, demo_bundle_source
from agents.models import BundleVersion, VersionStatus
from agents.services import bundle_versions_reap_stale
from tests.agents.cli_bundle import cli_shaped_bundle, expected_tools
from tests.bundles import sample, stored_files, upload
from tests.services import start_celery_worker

pytestmark = pytest.mark.timeout(240)


def wait_for_version(api: Any, key: str, slug: str, number: int = 1, timeout: float = 60) -> dict[str, Any]:
    """Long-poll the version until it leaves `validating`."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/api/v1/bundles/{slug}/versions/{number}?wait=10", key=key)
        assert response.status_code == 200, response.content
        body = response.json()
        if body["status"] != "validating" or time.monotonic() > deadline:
            return body


def invoke(api: Any, key: str, slug: str, tool: str, body: dict[str, Any]) -> Any:
    return api.post(f"/api/v1/bundles/{slug}/tools/{tool}/invoke", json=body, key=key)


SAMPLE_TOOLS = {
    "weather.mjs": {"weather": ["convertTemperature", "getWeather"]},
    "multi-agent.mjs": {"support": ["createTicket", "searchKnowledgeBase"], "ops": None},
    "hostile/tools.mjs": None,
}


def test_samples_reach_ready_with_zod_schemas_and_their_tools_run(celery_worker, alice, api, media_root):
    key = alice.keys["all"]
    for number, name in enumerate(SAMPLE_TOOLS):
        slug = name.replace("/", "-").removesuffix(".mjs")
        assert upload(key, sample(name), slug=slug).status_code == 201
    for name, expected in SAMPLE_TOOLS.items():
        slug = name.replace("/", "-").removesuffix(".mjs")
        version = wait_for_version(api, key, slug)
        assert version["status"] == "ready", version["error"]
        assert version["is_active"] is True
        manifest = version["manifest"]
        assert manifest["sha256"] == version["sha256"] and manifest["bytes"] == version["bytes"]
        for agent_key, tools in (expected or {}).items():
            agent = manifest["agents"][agent_key]
            if tools is not None:
                assert sorted(agent["tools"]) == tools
            for tool in agent["tools"].values():
                assert tool["inputSchema"]["type"] == "object"
                assert tool["inputSchema"]["properties"]

    weather = wait_for_version(api, key, "weather")["manifest"]["agents"]["weather"]
    assert weather["model"] == {"provider": "gateway", "id": "openai/gpt-4o-mini"}
    city = weather["tools"]["getWeather"]["inputSchema"]
    assert city["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert "city" in city["required"]
    support = wait_for_version(api, key, "multi-agent")["manifest"]["agents"]["support"]
    assert support["tools"]["searchKnowledgeBase"]["outputSchema"]["type"] == "object"

    agents = {agent["id"] for agent in api.get("/api/v1/agents", key=alice.keys["read"]).json()["results"]}
    assert {"weather/weather", "multi-agent/support", "multi-agent/ops", "hostile-tools/hostile"} <= agents

    result = invoke(api, alice.keys["execute"], "weather", "getWeather", {"input": {"city": "Paris"}}).json()
    assert result["ok"] is True, result
    assert result["output"]["city"] == "Paris"
    assert result["output"]["requestedBy"] == alice.organization.public_id
    assert any("weather lookup for Paris" in str(line) for line in result["logs"])
    bad = invoke(api, alice.keys["execute"], "weather", "getWeather", {"input": {"city": ""}}).json()
    assert bad["ok"] is False and bad["error"]["type"] == "invalid_input"
    converted = invoke(
        api,
        alice.keys["execute"],
        "weather",
        "convertTemperature",
        {"agent": "weather", "input": {"value": 100, "from": "celsius"}},
    ).json()
    assert converted["output"] == {"value": 212, "unit": "fahrenheit"}

    # tools.mjs introspects fine; its tools misbehave only when called, within the request's limit.
    spin = invoke(api, alice.keys["execute"], "hostile-tools", "infiniteLoop", {"timeout_ms": 1000}).json()
    assert spin["ok"] is False
    assert spin["error"]["type"] in {"timeout", "cpu_limit"}
    # The egress default is deny-all.
    fetched = invoke(
        api,
        alice.keys["execute"],
        "multi-agent",
        "fetchStatus",
        {"agent": "ops", "input": {"url": "https://example.com/status.json"}},
    ).json()
    assert fetched["ok"] is False
    assert fetched["error"]["type"] in {"egress_denied", "tool_error"}
    assert "egress" in str(fetched["error"]).lower() or "denied" in str(fetched["error"]).lower()


HOSTILE_AT_INTROSPECTION = {
    "no-agents.mjs": ({"invalid_bundle"}, "agent"),
    "no-default-export.mjs": ({"invalid_bundle"}, "default export"),
    "toplevel-loop.mjs": ({"cpu_limit", "timeout"}, "limit"),
}
HOSTILE_AT_UPLOAD = {
    "syntax-error.mjs": "syntax_error",
    "node-builtins.mjs": "invalid_bundle",
    "not-utf8.mjs": "invalid_bundle",
}


def test_hostile_bundles_are_rejected_and_cannot_run(celery_worker, alice, api, media_root):
    key = alice.keys["all"]
    for name, error_type in HOSTILE_AT_UPLOAD.items():
        response = upload(key, sample(f"hostile/{name}"), slug="up-" + name.removesuffix(".mjs"))
        assert response.status_code == 400, name
        assert response.json()["error"]["type"] == error_type
        assert response.json()["error"]["message"]
    assert BundleVersion.objects.count() == 0
    for name in HOSTILE_AT_INTROSPECTION:
        assert upload(key, sample(f"hostile/{name}"), slug=name.removesuffix(".mjs")).status_code == 201
    for name, (types, words) in HOSTILE_AT_INTROSPECTION.items():
        slug = name.removesuffix(".mjs")
        version = wait_for_version(api, key, slug)
        assert version["status"] == "rejected", (name, version)
        assert version["error"]["type"] in types, (name, version["error"])
        assert words in version["error"]["message"].lower(), (name, version["error"])
        assert version["manifest"] is None and version["is_active"] is False
        response = invoke(api, alice.keys["execute"], slug, "anything", {})
        assert response.status_code == 409
        assert api.post(f"/api/v1/bundles/{slug}/versions/1/activate", key=key).status_code == 409
    assert api.get("/api/v1/agents", key=key).json()["results"] == []


def test_cli_shaped_bundle_uploads_and_introspects(celery_worker, alice, api, media_root):
    data = cli_shaped_bundle()
    assert 1_000_000 < len(data) < 2_000_000
    response = upload(alice.keys["all"], data, slug="cli-shaped", multipart=False)
    assert response.status_code == 201, response.content
    version = wait_for_version(api, alice.keys["all"], "cli-shaped")
    assert version["status"] == "ready", version
    agents = version["manifest"]["agents"]
    assert {key: sorted(agent["tools"]) for key, agent in agents.items()} == expected_tools()
    assert agents["research"]["model"]["id"] == "gpt-4o"
    assert agents["research"]["model"]["provider"].startswith("openai")
    assert agents["analyst"]["tools"]["tool7"]["outputSchema"]["type"] == "object"
    stats = invoke(
        api, alice.keys["execute"], "cli-shaped", "tool7", {"input": {"values": [1, 2, 3.333]}}
    ).json()
    assert stats["ok"] is True, stats
    assert stats["output"] == {"mean": 2.11, "min": 1, "max": 3.333}


def test_demo_bundle_is_ready_and_its_tools_answer(celery_worker, alice, api, media_root):
    version = demo_bundle_ensure(alice.organization, alice.owner)
    assert demo_bundle_ensure(alice.organization, alice.owner).pk == version.pk
    body = wait_for_version(api, alice.keys["read"], "demo")
    assert body["status"] == "ready", body
    assert body["sha256"] == version.sha256 and body["bytes"] == len(demo_bundle_source())
    assert sorted(body["manifest"]["agents"]["assistant"]["tools"]) == [
        "calculator",
        "convertUnits",
        "textStats",
        "timeInZone",
    ]
    key = alice.keys["execute"]
    assert invoke(api, key, "demo", "calculator", {"input": {"expression": "(2 + 3) * sqrt(16) / 4"}}).json()[
        "output"
    ] == {"expression": "(2 + 3) * sqrt(16) / 4", "result": 5}
    paris = invoke(
        api, key, "demo", "timeInZone", {"input": {"timeZone": "Europe/Paris", "at": "2025-07-01T12:00:00Z"}}
    ).json()
    assert paris["output"]["localTime"] == "2025-07-01T14:00:00+02:00", paris
    miles = invoke(
        api, key, "demo", "convertUnits", {"input": {"value": 10, "from": "km", "to": "mi"}}
    ).json()
    assert miles["output"]["result"] == pytest.approx(6.2137119, rel=1e-6)
    stats = invoke(api, key, "demo", "textStats", {"input": {"text": "One two. Three!"}}).json()
    assert stats["output"]["words"] == 3 and stats["output"]["sentences"] == 2
    broken = invoke(api, key, "demo", "calculator", {"input": {"expression": "1/0"}}).json()
    assert broken["ok"] is False and broken["error"]["type"] == "tool_error"
    assert "Division by zero" in broken["error"]["message"]


def test_a_crashed_introspection_does_not_stay_validating(transactional_db, alice, api, media_root):
    """The worker dies mid-introspection; the reaper re-queues the version and a new worker finishes it."""
    worker = start_celery_worker()
    try:
        assert upload(alice.keys["all"], sample("hostile/toplevel-loop.mjs"), slug="loop").status_code == 201
        deadline = time.monotonic() + 30
        while not BundleVersion.objects.filter(introspect_started_at__isnull=False).exists():
            assert time.monotonic() < deadline, "the worker never claimed the version"
            time.sleep(0.05)
        worker.kill()
    finally:
        worker.stop()
    version = BundleVersion.objects.get()
    assert version.status == VersionStatus.VALIDATING
    # Later: the claim is older than the task's hard time limit.
    from datetime import timedelta

    from django.utils import timezone

    assert bundle_versions_reap_stale(now=timezone.now() + timedelta(minutes=5)) == 1
    worker = start_celery_worker()
    try:
        body = wait_for_version(api, alice.keys["read"], "loop")
    finally:
        worker.stop()
    assert body["status"] == "rejected"
    assert body["error"]["type"] in {"cpu_limit", "timeout"}
    version.refresh_from_db()
    assert version.introspect_attempts == 2
    assert len(stored_files(media_root)) == 3
