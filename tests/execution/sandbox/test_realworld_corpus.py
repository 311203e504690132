"""The real-world corpus through the real sandbox, compared with plain Node 20 running the same bundles.

The bundles are built at test setup by esbuild, with the Lightfast CLI's options, from the real npm
packages pinned in package.json (tests/realworld/corpus.py; cached by content hash). For each bundle
the manifest must name exactly the agents, models (provider, id, base URL) and tools Node sees, with
the JSON Schema each schema library itself produces; each tool must return exactly what Node returns
for the same input.

What the bundles exercise beyond the basics: those that inline the AI SDK (`ai-sdk-agents`,
`cli-shaped`) need WHATWG streams at load (the AI SDK declares `class ... extends TransformStream` at
top level); `node-builtins` needs the node:* modules; the `web-platform` tools need streams, Blob,
AbortSignal wired into fetch, structuredClone and crypto.subtle.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.limits import Limits
from execution.sandbox.transform import TransformedBundle, transform
from tests.egress_servers import serve
from tests.realworld import corpus

pytestmark = pytest.mark.timeout(600)

NAMES = [
    "ai-sdk-agents",
    "dates-collections",
    "node-builtins",
    "web-platform",
    "long-prompts",
    "zod-inlined",
    "cli-shaped",
]
CONTEXT = {"sessionId": "session-corpus", "resourceId": "org_corpus"}
BASE = "{base}"  # replaced by the local test server's http://127.0.0.1:PORT in tool inputs


# ---------------------------------------------------------------- local HTTP server for fetch tools

LINES = [f"line {i}: héllo ✓ {'é' * (i % 3)}" for i in range(40)]


class _Server(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/lines":
            # Chunked, in pieces that split multi-byte characters, so decoding must be streaming.
            body = ("\n".join(LINES) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 37):
                piece = body[start : start + 37]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/slow":
            time.sleep(3)
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(_Server) as port:
        yield f"http://127.0.0.1:{port}"


def _policy() -> EgressPolicy:
    # Loopback is reachable only through this explicitly test-named flag.
    return EgressPolicy(allow_hosts=["127.0.0.1"], unsafe_allow_loopback_for_tests=True)


# ---------------------------------------------------------------- the corpus, the sandbox and Node


@pytest.fixture(scope="session", autouse=True)
def built_corpus() -> dict[str, Any]:
    """Build (or reuse from the cache) every corpus bundle once per session."""
    return corpus.build_corpus()


@functools.cache
def _bundle(name: str) -> TransformedBundle:
    return transform(corpus.bundle_path(name).read_bytes())


@functools.cache
def _manifest_text(name: str) -> str:
    return json.dumps(api.introspect(_bundle(name)))


def _manifest(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(_manifest_text(name))
    return manifest


def _without_dialect(schema: Any) -> Any:
    """A JSON Schema without its top-level `$schema` (which dialect it is written in, not what it says)."""
    if isinstance(schema, dict):
        return {key: value for key, value in schema.items() if key != "$schema"}
    return schema


def test_the_corpus_builds_every_bundle_with_the_cli_options() -> None:
    summary = corpus.corpus_summary()
    assert sorted(summary) == sorted(NAMES)
    for name, info in summary.items():
        static = [path for path in info["imports"] if path not in ("fs", "os", "path")]
        # Only lightfast/*, zod and node:* are left as imports; everything else is inlined.
        assert all(p.startswith(("lightfast/", "zod", "node:")) for p in static), (name, info["imports"])
    assert summary["ai-sdk-agents"]["bytes"] > 500_000  # the AI SDK and three providers inlined
    assert "zod/v4" not in summary["zod-inlined"]["imports"]
    text = corpus.cli_shaped_bundle().read_text()
    assert 1_250_000 < len(text.encode()) <= 1_300_000
    assert "//# sourceMappingURL=data:application/json;base64," in text
    assert "EventSourceParserStream = class extends TransformStream" in text  # load needs streams


@pytest.mark.parametrize("name", NAMES)
def test_manifest_matches_what_node_sees(name: str) -> None:
    manifest = _manifest(name)
    expected = corpus.node_describe(name)
    assert manifest["metadata"] == expected["metadata"]
    assert list(manifest["agents"]) == list(expected["agents"])
    for key, want in expected["agents"].items():
        got = manifest["agents"][key]
        assert got["name"] == want["name"]
        assert got["system"] == want["system"]
        assert got["model"] == want["model"], key
        assert list(got["tools"]) == list(want["tools"]), key
        for tool, spec in want["tools"].items():
            described = got["tools"][tool]
            assert described["description"] == spec["description"]
            assert _without_dialect(described["inputSchema"]) == _without_dialect(spec["inputSchema"]), tool
            assert _without_dialect(described["outputSchema"]) == _without_dialect(spec["outputSchema"]), tool
            # Never the "tool without parameters" the model would otherwise see.
            assert described["inputSchema"]["type"] == "object" and described["inputSchema"]["properties"]


def test_ai_sdk_options_are_honoured_not_dropped() -> None:
    agents = _manifest("ai-sdk-agents")["agents"]
    assert agents["planner"]["options"] == {"stopWhen": {"stepCount": 4}, "temperature": 0.2}
    assert agents["researcher"]["options"] == {"stopWhen": [{"stepCount": 8}, {"hasToolCall": "finalAnswer"}]}
    assert agents["writer"]["options"] == {"stopWhen": {"hasToolCall": "publish"}}
    assert agents["routed"]["options"] == {"stopWhen": {"stepCount": 25}}
    assert agents["proxied"]["options"] == {"stopWhen": {"hasToolCall": "draftEmail"}}
    # The custom condition beside stepCountIs(12) cannot run on the platform: kept out, and said so.
    assert agents["support"]["options"] == {"stopWhen": [{"stepCount": 12}]}
    assert _manifest("ai-sdk-agents")["warnings"] == [
        "agent support: a custom stopWhen condition cannot run on the platform and is ignored"
    ]


def test_ai_sdk_schemas_models_and_base_urls() -> None:
    agents = _manifest("ai-sdk-agents")["agents"]
    search = agents["researcher"]["tools"]["searchDocs"]["inputSchema"]  # tool() + jsonSchema()
    assert search["required"] == ["query"] and search["properties"]["limit"]["maximum"] == 25
    units = agents["researcher"]["tools"]["convertUnits"]["inputSchema"]  # createTool + jsonSchema()
    assert units["properties"]["from"]["enum"] == ["m", "km", "mi", "ft"]
    order = agents["support"]["tools"]["lookupOrder"]["inputSchema"]  # zodSchema(zod 4)
    assert order["properties"]["orderId"]["pattern"] == "^ord_[0-9]{4}$"
    email = agents["writer"]["tools"]["draftEmail"]["inputSchema"]  # bare "zod": the v3 API
    assert email["properties"]["to"]["format"] == "email" and email["properties"]["bullets"]["minItems"] == 1
    assert agents["planner"]["model"] == {
        "provider": "openai.responses",
        "id": "gpt-4o-mini",
        "baseURL": "https://api.openai.com/v1",
    }
    assert agents["researcher"]["model"]["provider"] == "openai.chat"
    assert agents["writer"]["model"]["provider"] == "anthropic.messages"
    assert agents["support"]["model"]["baseURL"] == "https://llm.internal.example.com/v1"
    assert agents["proxied"]["model"]["baseURL"] == "https://claude-proxy.example.com/v1"
    assert agents["routed"]["model"] == {
        "provider": "gateway",
        "id": "anthropic/claude-sonnet-4",
        "baseURL": "https://ai-gateway.vercel.sh/v1/ai",
    }
    # The API keys given to createOpenAI/createAnthropic never reach the manifest.
    assert "sk-never-read" not in _manifest_text("ai-sdk-agents")


def test_cli_shaped_bundle_six_agents_on_the_gateway() -> None:
    manifest = _manifest("cli-shaped")
    assert manifest["metadata"]["name"] == "agent-chat"
    assert len(manifest["agents"]) == 6
    for agent in manifest["agents"].values():
        assert agent["model"]["provider"] == "gateway"
        assert agent["options"]["stopWhen"] == {"stepCount": len(agent["tools"]) * 3 + 2}
    assert manifest["warnings"] == []


def test_long_prompts_arrive_whole() -> None:
    agents = _manifest("long-prompts")["agents"]
    support = agents["support"]["system"]
    assert len(support.encode()) > 10_000
    assert "`Lightfast Cloud`" in support and "${notInterpolated}" in support
    assert "👩‍💻" in support and "e\u0301" in support and "日本語で話せる人" in support
    assert "\\n" in support and "policy 2024.06" in support and "${VERSION}" not in support
    utf16_length = len(support.encode("utf-16-le")) // 2  # JS string length
    assert agents["reviewer"]["system"].endswith(f"Total policy length: {utf16_length} characters.\n")


# ---------------------------------------------------------------- tool calls: the sandbox against Node

ORDERS = [
    {"id": "o1", "customer": "Ada Lovelace", "total": 120.5, "status": "paid"},
    {"id": "o2", "customer": "alan turing", "total": 80, "status": "open"},
    {"id": "o3", "customer": "Ada Lovelace", "total": 15, "status": "void"},
    {"id": "o4", "customer": "Grace_Hopper", "total": 300, "status": "paid"},
    {"id": "o5", "customer": "alan turing", "total": 99.99, "status": "paid"},
]
DIFF = "--- a/x.py\n+++ b/x.py\n@@\n-old\n+new\n+more\n context\n+++ b/y.py\n+y\n"

# (bundle, agent, tool, input); inputs Node refuses must be refused by the sandbox too.
CALLS: list[tuple[str, str, str, Any]] = [
    (
        "ai-sdk-agents",
        "planner",
        "scheduleMeeting",
        {"title": "Sync", "attendees": ["a@x.io", "b@y.org", "c@x.io"], "durationMinutes": 50},
    ),
    ("ai-sdk-agents", "planner", "scheduleMeeting", {"title": "", "attendees": []}),
    (
        "ai-sdk-agents",
        "planner",
        "estimateCost",
        {"text": "héllo wörld ✓ " * 20, "model": "large", "tags": {"a": 1}},
    ),
    (
        "ai-sdk-agents",
        "researcher",
        "searchDocs",
        {"query": "Streams and Fetch", "sections": ["api", "faq"], "limit": 3},
    ),
    ("ai-sdk-agents", "researcher", "convertUnits", {"value": 26.2, "from": "mi", "to": "km"}),
    ("ai-sdk-agents", "researcher", "convertUnits", {"value": "far", "from": "mi", "to": "km"}),
    (
        "ai-sdk-agents",
        "writer",
        "draftEmail",
        {"to": "ops@example.com", "subject": " Status ", "bullets": ["a", "b"]},
    ),
    ("ai-sdk-agents", "writer", "draftEmail", {"to": "not-an-email", "subject": "x", "bullets": []}),
    ("ai-sdk-agents", "writer", "publish", {"slug": "hello-world"}),
    ("ai-sdk-agents", "support", "lookupOrder", {"orderId": "ord_0042", "includeItems": True}),
    ("ai-sdk-agents", "support", "lookupOrder", {"orderId": "42", "includeItems": True}),
    ("ai-sdk-agents", "researcher", "finalAnswer", {"answer": "42 ✓"}),
    (
        "ai-sdk-agents",
        "writer",
        "streamDraft",
        {"text": "Streams all the way down: ✓ héllo " * 10, "chunkSize": 7},
    ),
    ("dates-collections", "calendar", "planSprint", {"start": "2024-02-26", "days": 10}),
    (
        "dates-collections",
        "calendar",
        "planSprint",
        {"start": "2023-12-29", "days": 5, "skipWeekends": False},
    ),
    ("dates-collections", "ledger", "summariseOrders", {"orders": ORDERS}),
    ("dates-collections", "ledger", "summariseOrders", {"orders": ORDERS, "pageSize": 4}),
    ("node-builtins", "ids", "makeIds", {"count": 20, "size": 12}),
    ("node-builtins", "ids", "hashText", {"text": "héllo wörld ✓ \U0001f680", "key": "secret"}),
    ("node-builtins", "ids", "emitAndFormat", {"events": ["a", "b", "c"], "n": 7}),
    ("web-platform", "web", "streamPipeline", {"parts": ["hello ", "wörld!", " ✓"]}),
    ("web-platform", "web", "fetchStream", {"url": f"{BASE}/lines"}),
    ("web-platform", "web", "fetchWithTimeout", {"url": f"{BASE}/slow", "timeoutMs": 300}),
    ("web-platform", "web", "fetchWithTimeout", {"url": f"{BASE}/quick", "timeoutMs": 5000}),
    (
        "web-platform",
        "web",
        "blobAndUrl",
        {"text": "héllo", "url": "https://user@example.com:8443/a/b/c?z=1&a=2#frag"},
    ),
    ("web-platform", "web", "cloneAndDigest", {"text": "The quick brown fox ✓"}),
    (
        "long-prompts",
        "support",
        "checkReply",
        {"reply": "Lightfast Cloud: chargeback? 日本語で話せる人 👩‍💻", "language": "ja"},
    ),
    ("zod-inlined", "rooms", "bookRoom", {"room": "cygnus", "people": 10, "from": "2024-06-01T09:00:00Z"}),
    ("zod-inlined", "rooms", "bookRoom", {"room": "nowhere", "people": 0, "from": "yesterday"}),
    (
        "zod-inlined",
        "rooms",
        "tagItems",
        {
            "items": [{"name": "apple", "price": 1}, {"name": "avocado", "price": 3}],
            "rule": {"kind": "prefix", "prefix": "av"},
        },
    ),
    (
        "cli-shaped",
        "customer-support",
        "lookupCustomer",
        {"email": "ada@example.com", "fields": ["plan", "seats", "region"]},
    ),
    (
        "cli-shaped",
        "qa-test",
        "createTicket",
        {"title": "Crash on save", "severity": "high", "body": "stack…"},
    ),
    ("cli-shaped", "code-review", "analyzeDiff", {"diff": DIFF}),
    ("cli-shaped", "data-analyst", "summarizeColumn", {"values": [3, 1, 4, 1, 5, 9, 2, 6]}),
    ("cli-shaped", "content-writer", "streamDraft", {"text": "Draft ✓ " * 40}),
    (
        "cli-shaped",
        "content-writer",
        "wordStats",
        {"text": "It's the best of times, it's the worst of times."},
    ),
]


def _with_base(value: Any, base: str) -> Any:
    return json.loads(json.dumps(value).replace(BASE, base))


@functools.cache
def _node_results(name: str, base: str) -> str:
    calls = [
        {"agent": agent, "tool": tool, "input": _with_base(input, base), "context": CONTEXT}
        for bundle, agent, tool, input in CALLS
        if bundle == name
    ]
    return json.dumps(corpus.node_invoke(name, calls))


def _node_result(index: int, base: str) -> dict[str, Any]:
    name = CALLS[index][0]
    position = [i for i, call in enumerate(CALLS) if call[0] == name].index(index)
    result: dict[str, Any] = json.loads(_node_results(name, base))[position]
    return result


@pytest.mark.parametrize("index", range(len(CALLS)), ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CALLS)])
def test_tool_output_equals_node(index: int, base_url: str) -> None:
    name, agent, tool, input = CALLS[index]
    expected = _node_result(index, base_url)
    result = api.invoke(
        _bundle(name),
        agent=agent,
        tool=tool,
        input=_with_base(input, base_url),
        context=CONTEXT,
        env={},
        egress=_policy(),
        limits=Limits(),
        bundle_key=f"org_corpus:{name}",
    )
    if expected["ok"]:
        assert result.ok, result.error
        assert result.output == expected["output"]
    else:
        # Node's schema refused the input: the sandbox refuses it before the tool runs.
        assert not result.ok and result.error is not None
        assert result.error["type"] == "invalid_input", result.error


def _first_call(tool: str) -> int:
    return next(i for i, call in enumerate(CALLS) if call[2] == tool)


def test_node_answers_the_calls_the_way_the_tools_say() -> None:
    """The Node side is not vacuous: spot checks of what the harness computed."""
    base = "http://127.0.0.1:9"
    first = _node_result(0, base)
    assert (
        first["ok"] and first["output"]["invitees"] == 3 and first["output"]["domains"] == ["x.io", "y.org"]
    )
    assert _node_result(1, base)["ok"] is False  # empty title and no attendees
    sprint = _node_result(_first_call("planSprint"), base)["output"]
    assert sprint["first"] == "Monday, February 26th 2024" and sprint["monthEnd"] == "2024-02-29"
    ids = _node_result(_first_call("makeIds"), base)["output"]
    assert ids == {
        "lengths": [12],
        "urlSafe": True,
        "unique": True,
        "hexOk": True,
        "weakLength": 21,
        "uuidOk": True,
        "randomBytes": 12,
    }
    draft = _node_result(_first_call("streamDraft"), base)["output"]
    assert draft["pieces"] == 49 and draft["text"] == ("STREAMS ALL THE WAY DOWN: ✓ HÉLLO " * 10)


def test_fetch_server_streams_in_pieces(base_url: str) -> None:
    """The /lines body really arrives in many chunks that split characters (what fetchStream reads)."""
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/lines") as response:  # noqa: S310 - the local test server
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.read().decode().splitlines() == LINES
