"""The real-world corpus through the REST upload path: upload, introspection by a Celery worker, a call.

Each bundle of tests/realworld/corpus.py (built by esbuild from real packages with the CLI's
options) is uploaded as a user would; the stored manifest must name the agents, models and tool
schemas plain Node 20 sees, and a tool called over REST must answer what Node answers.
The AI SDK bundles wait for WHATWG streams and `node-builtins` for node:* modules (see
tests/execution/sandbox/test_realworld_corpus.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.agents.test_introspection import invoke, wait_for_version
from tests.bundles import upload
from tests.realworld import corpus

pytestmark = pytest.mark.timeout(300)

# bundle -> (agent, tool, input) called over REST after the upload.
CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ai-sdk-agents": ("researcher", "searchDocs", {"query": "streams api", "limit": 2}),
    "dates-collections": ("calendar", "planSprint", {"start": "2024-02-26", "days": 10}),
    "node-builtins": ("ids", "hashText", {"text": "héllo", "key": "k"}),
    "web-platform": ("web", "blobAndUrl", {"text": "héllo", "url": "https://example.com/a?b=1"}),
    "long-prompts": ("support", "checkReply", {"reply": "Lightfast Cloud ✓", "language": "en"}),
    "zod-inlined": ("rooms", "bookRoom", {"room": "atlas", "people": 3, "from": "2024-06-01T09:00:00Z"}),
    "cli-shaped": ("code-review", "analyzeDiff", {"diff": "+++ b/a\n+x\n-y\n"}),
}


def _without_dialect(schema: Any) -> Any:
    return {k: v for k, v in schema.items() if k != "$schema"} if isinstance(schema, dict) else schema


@pytest.mark.parametrize("name", list(CALLS))
def test_corpus_bundle_uploads_introspects_and_answers(
    name: str, celery_worker: Any, alice: Any, api: Any, media_root: Any
) -> None:
    data = corpus.bundle_path(name).read_bytes()
    slug = f"rw-{name}"
    response = upload(alice.keys["all"], data, slug=slug, multipart=False)
    assert response.status_code == 201, response.content
    version = wait_for_version(api, alice.keys["all"], slug, timeout=120)
    assert version["status"] == "ready", version["error"]
    manifest = version["manifest"]
    assert manifest["bytes"] == len(data)
    expected = corpus.node_describe(name)
    # PostgreSQL's jsonb keeps object keys in an order of its own: the agents, not their order.
    assert sorted(manifest["agents"]) == sorted(expected["agents"])
    for key, want in expected["agents"].items():
        got = manifest["agents"][key]
        assert (got["name"], got["system"], got["model"]) == (want["name"], want["system"], want["model"])
        assert {tool: _without_dialect(spec["inputSchema"]) for tool, spec in got["tools"].items()} == {
            tool: _without_dialect(spec["inputSchema"]) for tool, spec in want["tools"].items()
        }
    agent, tool, tool_input = CALLS[name]
    answer = invoke(api, alice.keys["execute"], slug, tool, {"agent": agent, "input": tool_input}).json()
    node = corpus.node_invoke(name, [{"agent": agent, "tool": tool, "input": tool_input}])[0]
    assert node["ok"], node
    assert answer["ok"] is True, answer
    assert answer["output"] == node["output"]
