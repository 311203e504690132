"""Errors a bundle author can act on, through `manage.py bundle` and the api.

A bundle that touches a global the sandbox does not offer fails with invalid_bundle naming it and the
line:column in the uploaded file (not in the transformed script), also when the upload carries an
inline source map (then the author's source position is given too); a tool's error carries the
upload position of the code that threw. Tool inputs with a lone surrogate escape are JSON and are
accepted (the tool sees U+FFFD, the platform's value rule); `--calls` lines may hold a raw U+2028.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.locate import mapped_position, script_position
from execution.sandbox.transform import original_position, transform

ROOT = Path(__file__).resolve().parents[3]
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"

WEBSOCKET = b"""import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";

const a = createAgent({ name: "a", system: "x", model: "demo" });
const socket = new WebSocket("wss://example.com/feed");
export default createLightfast({ agents: { a } });
"""

# Line 6 of the author's source; esbuild drops the comment and blank line, so line 5 of the upload.
XHR_SOURCE = """import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";

// the request is made at load time
const a = createAgent({ name: "a", system: "x", model: "demo" });
const request = new XMLHttpRequest();
export default createLightfast({ agents: { a } });
"""

TOOLS = b"""import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";

const echo = createTool({
  description: "echo",
  execute: async (i) => ({ input: i, codes: typeof i === "string" ? [...i].map((c) => c.charCodeAt()) : 0 }),
});
const broken = createTool({
  description: "throws",
  execute: async () => {
    const value = null;
    return value.field;
  },
});
const a = createAgent({ name: "a", system: "x", model: "demo", tools: { echo, broken } });
export default createLightfast({ agents: { a } });
"""


def _bundle_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "bundle", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _inline_map_bundle(tmp_path: Path) -> Path:
    """XHR_SOURCE built by esbuild with an inline source map, as a CLI build with maps looks."""
    source = tmp_path / "src" / "agent.ts"
    source.parent.mkdir()
    source.write_text(XHR_SOURCE)
    out = tmp_path / "bundle.mjs"
    subprocess.run(
        [
            str(ESBUILD),
            str(source),
            "--bundle",
            "--format=esm",
            "--platform=node",
            "--external:lightfast/*",
            "--sourcemap=inline",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    return out


def test_inspect_names_the_missing_global_at_its_line_and_column_in_the_upload(tmp_path: Path) -> None:
    path = tmp_path / "ws.mjs"
    path.write_bytes(WEBSOCKET)
    done = _bundle_command("inspect", str(path))
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "invalid_bundle"
    # Line 5 of the upload, column 20 is where `WebSocket` starts ("const socket = new " is 19 characters).
    assert WEBSOCKET.decode().splitlines()[4][19:28] == "WebSocket"
    assert error["message"] == (
        "the bundle threw while loading: WebSocket is not defined (line 5, column 20): "
        "the sandbox runtime has no global WebSocket (docs/runtime.md lists what it offers)"
    )
    assert error["detail"]["line"] == 5 and error["detail"]["column"] == 20
    assert error["detail"]["missing_global"] == "WebSocket"
    # The transformed script's own position is elsewhere: the mapping did the work.
    assert script_position(error["detail"]["stack"]) != (5, 20)


def test_inspect_with_an_inline_source_map_gives_upload_and_source_positions(tmp_path: Path) -> None:
    path = _inline_map_bundle(tmp_path)
    upload_line = path.read_text().splitlines()[4]
    assert upload_line.startswith("var request = new XMLHttpRequest()")
    done = _bundle_command("inspect", str(path))
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "invalid_bundle"
    assert "XMLHttpRequest is not defined (line 5, column 19; " in error["message"]
    assert error["detail"]["line"] == 5 and error["detail"]["column"] == 19
    assert error["detail"]["source"].endswith("src/agent.ts")
    assert (error["detail"]["source_line"], error["detail"]["source_column"]) == (6, 21)


def test_a_runtime_function_throwing_is_placed_at_the_bundle_line_that_called_it() -> None:
    source = b"""import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
const a = createAgent({ name: "a", system: "x", model: "demo" });

const b = createAgent({ system: "no name" });
export default createLightfast({ agents: { a, b } });
"""
    with pytest.raises(SandboxError) as raised:
        api.introspect(transform(source))
    error = raised.value
    assert error.code == "invalid_bundle"
    assert "createAgent: name must be a non-empty string" in error.message
    assert error.detail["line"] == 5
    assert error.message.endswith(f"(line 5, column {error.detail['column']})")
    assert "missing_global" not in error.detail


def _invoke(bundle: Any, tool: str, input: Any) -> api.InvokeResult:
    return api.invoke(
        bundle,
        agent="a",
        tool=tool,
        input=input,
        context={"sessionId": "s", "resourceId": "r"},
        env={},
        egress=EgressPolicy(),
        limits=Limits(),
        bundle_key="org_alice:positions",
    )


def test_a_tool_error_carries_the_upload_position_of_the_throwing_line() -> None:
    result = _invoke(transform(TOOLS), "broken", {})
    assert not result.ok and result.error is not None
    assert result.error["type"] == "tool_error"
    at = result.error["detail"]["at"]
    line = TOOLS.decode().split("\n")[at["line"] - 1]
    assert at["line"] == 13 and line.strip() == "return value.field;"
    # Within `value.field` (source maps place the expression, the engine its property access).
    assert line.index("value") + 1 <= at["column"] <= line.index("field") + 1


def test_a_lone_surrogate_input_reaches_the_tool_as_the_replacement_character() -> None:
    result = _invoke(transform(TOOLS), "echo", json.loads('"a\\ud83db"'))
    assert result.ok, result.error
    assert result.output == {"input": "a\ufffdb", "codes": [97, 0xFFFD, 98]}


def test_invoke_input_with_a_lone_surrogate_escape_is_json(tmp_path: Path) -> None:
    path = tmp_path / "tools.mjs"
    path.write_bytes(TOOLS)
    done = _bundle_command("invoke", str(path), "--agent", "a", "--tool", "echo", "--input", '"a\\ud83db"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["output"] == {"input": "a\ufffdb", "codes": [97, 0xFFFD, 98]}


def test_calls_lines_may_hold_a_raw_line_separator(tmp_path: Path) -> None:
    path = tmp_path / "tools.mjs"
    path.write_bytes(TOOLS)
    calls = tmp_path / "calls.jsonl"
    lines = [
        json.dumps({"agent": "a", "tool": "echo", "input": "x\u2028y\u2029z\x85w"}, ensure_ascii=False),
        json.dumps({"agent": "a", "tool": "echo", "input": "second"}, ensure_ascii=False),
        "",
        json.dumps({"agent": "a", "tool": "echo", "input": "a\ud83db"}),  # written as the escape
    ]
    calls.write_bytes(("\n".join(lines[:2]) + "\r\n" + "\n".join(lines[2:]) + "\n").encode())
    assert "\u2028" in calls.read_text(encoding="utf-8")
    done = _bundle_command("invoke", str(path), "--calls", str(calls))
    assert done.returncode == 0, done.stdout + done.stderr
    # stdout holds the raw U+2028 too: split where the command ends its lines.
    outputs = [json.loads(line)["output"]["input"] for line in done.stdout.split("\n") if line]
    assert outputs == ["x\u2028y\u2029z\x85w", "second", "a\ufffdb"]


def test_the_cached_position_lookup_answers_as_the_transform_does() -> None:
    source = (ROOT / "tests" / "fixtures" / "sandbox" / "node" / "cases.mjs").read_bytes()
    bundle = transform(source)
    assert bundle.source_map is not None
    lines = bundle.script.split("\n")
    checked = 0
    for number, text in enumerate(lines, 1):
        for column in range(1, len(text) + 2, 5):
            expected = original_position(bundle.source_map, number, column)
            assert mapped_position(bundle.source_map, number, column) == expected, (number, column)
            checked += expected is not None
    assert checked > 500
