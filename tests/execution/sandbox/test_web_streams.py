"""Streams, events, abort signals, Blob/FormData and fetch bodies in the sandbox, compared with Node 20.

Each case in tests/fixtures/sandbox/web-streams-cases.js runs twice: wrapped as a tool of a real
bundle in the sandbox (through the public api and the jailed pool), and as a plain Node 20 script;
the two JSON results must be equal. The fetch cases reach a test HTTP server on 127.0.0.1 (the
sandbox through the host's egress, with the loopback allowed by the test-only policy flag). The
hostile cases at the end run only in the sandbox: streams that never end, request bodies past the
request byte limit, and bundles that replace the stream prototypes before they fetch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.limits import Limits
from execution.sandbox.transform import TransformedBundle, transform
from tests.egress_servers import serve

ROOT = Path(__file__).resolve().parents[3]
CASES = ROOT / "tests" / "fixtures" / "sandbox" / "web-streams-cases.js"
CONTEXT = {"sessionId": "session-streams", "resourceId": "org_streams"}
TEXT = "abcdef😀 é wörld ✓"

BUNDLE_HEAD = """import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
"""

BUNDLE_TAIL = """
var run = createTool({
  description: "run one web-platform case",
  inputSchema: z.object({ name: z.string(), input: z.record(z.string(), z.any()) }),
  execute: ({ name, input }) => cases[name](input),
});
export default createLightfast({
  agents: { web: createAgent({ name: "web", system: "web platform cases", model: "demo", tools: { run } }) },
  metadata: { name: "web-streams", version: "1.0.0", description: "web platform cases" },
});
"""

NODE_TAIL = """
const out = await cases[process.argv[2]](JSON.parse(process.argv[3]));
process.stdout.write(JSON.stringify(out));
"""


class _Server(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).received.append({"method": "GET", "path": self.path, "body": b""})
        if self.path == "/text":
            self._send(200, "streamed text: héllo ✓".encode() * 50, [("Content-Type", "text/plain")])
        elif self.path == "/redirect":
            self._send(302, b"", [("Location", "/text")])
        elif self.path == "/cookies":
            self._send(200, b"ok", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly")])
        elif self.path == "/big":
            self._send(200, b"0123456789" * 20_000, [("Content-Type", "application/octet-stream")])
        elif self.path == "/slow":
            time.sleep(1.0)  # bounded: the aborting cases give up long before
            self._send(200, b"late", [])
        else:
            self._send(404, b"", [])

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":  # Node streams a stream body
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self._body()
        type(self).received.append({"method": "POST", "path": self.path, "body": body})
        echo = {
            "method": self.command,
            "contentType": self.headers.get("Content-Type"),
            "length": len(body),
            "body": body.decode("utf-8", "replace"),
        }
        self._send(200, json.dumps(echo).encode(), [("Content-Type", "application/json")])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The test HTTP server's base URL (127.0.0.1, plain HTTP)."""
    with serve(_Server) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def bundle() -> TransformedBundle:
    return transform((BUNDLE_HEAD + CASES.read_text() + BUNDLE_TAIL).encode())


def _policy() -> EgressPolicy:
    return EgressPolicy(allow_hosts=["127.0.0.1"], unsafe_allow_loopback_for_tests=True)


def _sandbox(bundle: TransformedBundle, tool: str, input: dict[str, Any], **extra: Any) -> api.InvokeResult:
    options: dict[str, Any] = {
        "context": CONTEXT,
        "env": {},
        "egress": _policy(),
        "limits": Limits(cpu_ms=3000, wall_ms=10_000),
        "bundle_key": "org_streams:v1",
    }
    options.update(extra)
    return api.invoke(bundle, agent="web", tool=tool, input=input, **options)


def _node(name: str, input: dict[str, Any], tmp_path: Path) -> Any:
    node = shutil.which("node")
    assert node is not None, "node is needed to compare with Node 20"
    script = tmp_path / f"{name}.mjs"
    script.write_text(CASES.read_text() + NODE_TAIL)
    done = subprocess.run(
        [node, str(script), name, json.dumps(input)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


LOCAL_CASES = [
    ("readable_basic", {}),
    ("transform_and_pipes", {}),
    ("tee_cancel_and_errors", {}),
    ("byte_streams", {}),
    ("text_streams", {"text": TEXT}),
    ("events", {}),
    ("abort_signals", {}),
    ("response_bodies", {}),
    ("request_bodies", {}),
    ("blobs", {"text": TEXT}),
    ("form_data", {}),
    ("headers", {}),
]

FETCH_CASES = [
    "fetch_stream_body",
    "fetch_post_stream",
    "fetch_post_form",
    "fetch_redirect",
    "fetch_set_cookie",
    "fetch_abort",
]


@pytest.mark.parametrize(("name", "input"), LOCAL_CASES, ids=[name for name, _ in LOCAL_CASES])
def test_case_matches_node(
    bundle: TransformedBundle, name: str, input: dict[str, Any], tmp_path: Path
) -> None:
    result = _sandbox(bundle, "run", {"name": name, "input": input})
    assert result.ok, (result.error, result.logs)
    assert result.output == _node(name, input, tmp_path)


@pytest.mark.parametrize("name", FETCH_CASES)
def test_fetch_case_matches_node(bundle: TransformedBundle, server: str, name: str, tmp_path: Path) -> None:
    input = {"base": server}
    result = _sandbox(bundle, "run", {"name": name, "input": input})
    assert result.ok, (result.error, result.logs)
    assert result.output == _node(name, input, tmp_path)


def test_spot_values(bundle: TransformedBundle, server: str) -> None:
    """A few outputs checked by value too, so a shared mistake of both sides cannot pass."""
    text = _sandbox(bundle, "run", {"name": "text_streams", "input": {"text": TEXT}}).output
    assert text["decoded"] == TEXT and text["encodedMatches"] is True and text["fatal"] == "TypeError"
    abort = _sandbox(bundle, "run", {"name": "fetch_abort", "input": {"base": server}}).output
    assert abort == {
        "before": "AbortError",
        "beforeCustom": "plain reason",
        "during": "AbortError",
        "timeout": "TimeoutError",
        "viaRequest": "TimeoutError",
        "afterDelivered": 200,
    }
    redirect = _sandbox(bundle, "run", {"name": "fetch_redirect", "input": {"base": server}}).output
    assert redirect["redirected"][:2] == [True, True] and redirect["direct"] == [False, True]
    echo = _sandbox(bundle, "run", {"name": "fetch_post_stream", "input": {"base": server}}).output
    assert echo["body"] == "hello streamed wörld" and echo["method"] == "POST"


def test_real_lightfast_bundle_shape_loads() -> None:
    """`class ... extends TransformStream` at top level (the AI SDK's EventSourceParserStream) loads."""
    source = (
        BUNDLE_HEAD
        + """
var EventSourceParserStream = class extends TransformStream {
  constructor() {
    super({ transform(chunk, controller) { controller.enqueue(chunk.toUpperCase()); } });
  }
};
var parse = createTool({
  description: "parse", inputSchema: z.object({}),
  execute: async () => {
    const out = [];
    const parsed = ReadableStream.from(["a", "b"]).pipeThrough(new EventSourceParserStream());
    for await (const c of parsed) out.push(c);
    return out;
  },
});
var sse = createAgent({ name: "sse", system: "s", model: "demo", tools: { parse } });
export default createLightfast({ agents: { sse } });
"""
    )
    bundle = transform(source.encode())
    assert list(api.introspect(bundle)["agents"]) == ["sse"]
    result = api.invoke(
        bundle,
        agent="sse",
        tool="parse",
        input={},
        context=CONTEXT,
        env={},
        egress=EgressPolicy(),
        limits=Limits(),
        bundle_key="org_streams:sse",
    )
    assert result.ok and result.output == ["A", "B"]


# ---------------------------------------------------------------- hostile bundles

HOSTILE = ROOT / "tests" / "fixtures" / "sandbox" / "web-streams-hostile.mjs"


@pytest.fixture(scope="module")
def hostile() -> TransformedBundle:
    return transform(HOSTILE.read_bytes())


def test_assigning_a_lazy_global_replaces_it_without_loading(hostile: TransformedBundle) -> None:
    result = _sandbox(hostile, "run", {"name": "reassigned", "input": {}})
    assert result.ok, result.error
    assert result.output == ["replaced", "function", "function"]


def test_stream_globals_load_on_first_use_and_become_data_properties(hostile: TransformedBundle) -> None:
    """Untouched, a lazy global is still its accessor (nothing loaded); a touch installs its whole module."""
    result = _sandbox(hostile, "run", {"name": "laziness", "input": {}})
    assert result.ok, result.error
    assert result.output == {
        "before": ["accessor", "accessor", "accessor"],
        "touched": "function",
        "after": ["data", "data", "accessor"],
    }


def test_a_stream_that_never_ends_stops_at_the_cpu_or_wall_limit(hostile: TransformedBundle) -> None:
    result = _sandbox(
        hostile, "run", {"name": "endlessRead", "input": {}}, limits=Limits(cpu_ms=300, wall_ms=3000)
    )
    assert result.error is not None and result.error["type"] in {"cpu_limit", "timeout"}


def test_a_stream_that_never_produces_ends_the_call_as_stalled(hostile: TransformedBundle) -> None:
    result = _sandbox(
        hostile, "run", {"name": "neverEnds", "input": {}}, limits=Limits(cpu_ms=300, wall_ms=3000)
    )
    assert result.error is not None and result.error["type"] == "timeout"


def test_a_request_body_stream_past_the_byte_limit_never_leaves(
    hostile: TransformedBundle, server: str
) -> None:
    _Server.received = []
    result = _sandbox(
        hostile,
        "run",
        {"name": "oversizedBody", "input": {"base": server}},
        limits=Limits(cpu_ms=3000, wall_ms=10_000, fetch_request_bytes=200_000),
    )
    assert result.ok, result.error
    assert result.output["name"] == "TypeError" and "larger than 200000 bytes" in result.output["message"]
    assert _Server.received == [] and result.usage["fetches"] == 0


def test_replaced_stream_prototypes_leave_the_bytes_sent_alone(
    hostile: TransformedBundle, server: str
) -> None:
    _Server.received = []
    result = _sandbox(hostile, "run", {"name": "replacedPrototypes", "input": {"base": server}})
    assert result.ok, (result.error, result.logs)
    assert [r["body"] for r in _Server.received] == [b"hi!?"]
    assert result.output == 200


def test_look_alike_chunks_are_refused_before_sending(hostile: TransformedBundle, server: str) -> None:
    _Server.received = []
    result = _sandbox(hostile, "run", {"name": "fakeChunks", "input": {"base": server}})
    assert result.ok, (result.error, result.logs)
    assert result.output == ["TypeError", "TypeError", "TypeError"]
    assert _Server.received == []


def test_abort_errors_a_body_still_being_read(hostile: TransformedBundle, server: str) -> None:
    """Aborting after the response arrived errors its unread body with the reason (not a read one)."""
    result = _sandbox(hostile, "run", {"name": "abortWhileReading", "input": {"base": server}})
    assert result.ok, (result.error, result.logs)
    assert result.output == {
        "firstBytes": 65536,
        "next": "AbortError",
        "text": "RangeError",
        "length": 200_000,
        "used": True,
    }


def test_abort_drops_the_late_host_result(bundle: TransformedBundle, server: str) -> None:
    """An aborted fetch's result arrives after the call moved on; the call still ends cleanly."""
    result = _sandbox(bundle, "run", {"name": "fetch_abort", "input": {"base": server}})
    assert result.ok, result.error
    assert result.output["during"] == "AbortError"
    again = _sandbox(bundle, "run", {"name": "headers", "input": {}})
    assert again.ok
