"""Through the real upload path: REST upload -> jailed esbuild -> Celery introspection.

A bundle touching a global the sandbox does not offer is rejected with invalid_bundle naming it and
its line:column in the uploaded file (also with an inline source map: the stored script and map are
the composed ones, the position is still the upload's); a bundle importing Node built-ins the
sandbox offers becomes ready and runs; refused built-ins are named with the reason at upload; a
tool input holding a lone surrogate escape is accepted over REST.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.agents.test_introspection import wait_for_version
from tests.bundles import upload

ROOT = Path(__file__).resolve().parents[2]
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"

MISSING_GLOBAL = b"""import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";

const agent = createAgent({ name: "feed", system: "x", model: "demo" });
export const socket = new WebSocket("wss://example.com/feed");
export default createLightfast({ agents: { agent } });
"""

AUTHOR_SOURCE = """import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";

// polls with XHR at load time
const agent = createAgent({ name: "poller", system: "x", model: "demo" });
const request = new XMLHttpRequest();
export default createLightfast({ agents: { agent } });
"""

NODE_TOOLS = b"""import { createHash, randomUUID } from "node:crypto";
import { EventEmitter } from "events";
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";

const digest = createTool({
  description: "sha256 of a text",
  execute: async (input) => {
    const events = new EventEmitter();
    let seen = "";
    events.on("text", (t) => { seen = t; });
    events.emit("text", input.text);
    return { hex: createHash("sha256").update(seen).digest("hex"), uuid: randomUUID().length,
             codes: [...seen].map((c) => c.charCodeAt(0)) };
  },
});
const hasher = createAgent({ name: "hasher", system: "x", model: "demo", tools: { digest } });
export default createLightfast({ agents: { hasher } });
"""


def _inline_map_upload(tmp_path: Path) -> bytes:
    source = tmp_path / "src" / "agent.ts"
    source.parent.mkdir()
    source.write_text(AUTHOR_SOURCE)
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
    return out.read_bytes()


def test_upload_rejections_name_what_is_missing_and_where(celery_worker, alice, api, media_root, tmp_path):
    key = alice.keys["all"]
    assert upload(key, MISSING_GLOBAL, slug="feed").status_code == 201
    mapped = _inline_map_upload(tmp_path)
    assert mapped.decode().split("\n")[4].startswith("var request = new XMLHttpRequest()")
    assert upload(key, mapped, slug="poller").status_code == 201

    # Column 27: `WebSocket` after "export const socket = new " (26 characters).
    assert MISSING_GLOBAL.decode().split("\n")[4][26:35] == "WebSocket"
    feed = wait_for_version(api, key, "feed")
    assert feed["status"] == "rejected", feed
    error = feed["error"]
    assert error["type"] == "invalid_bundle"
    assert error["message"].startswith(
        "the bundle threw while loading: WebSocket is not defined (line 5, column 27)"
    )
    assert "no global WebSocket" in error["message"]
    assert error["detail"]["line"] == 5 and error["detail"]["column"] == 27
    assert error["detail"]["missing_global"] == "WebSocket"

    poller = wait_for_version(api, key, "poller")
    assert poller["status"] == "rejected", poller
    error = poller["error"]
    assert "XMLHttpRequest is not defined (line 5, column 19; " in error["message"]
    assert (error["detail"]["line"], error["detail"]["column"]) == (5, 19)
    assert error["detail"]["source"].endswith("src/agent.ts")
    assert (error["detail"]["source_line"], error["detail"]["source_column"]) == (6, 21)


def test_node_builtins_upload_and_run_and_refused_ones_are_explained(celery_worker, alice, api, media_root):
    key = alice.keys["all"]
    refused = upload(
        key, b'import { readFileSync } from "node:fs";\nexport default readFileSync;\n', slug="reader"
    )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_bundle"
    assert "`fs` is not available in the sandbox: bundles have no file system; use fetch" in error["message"]
    assert "Node modules offered: " in error["message"]

    assert upload(key, NODE_TOOLS, slug="hasher").status_code == 201
    version = wait_for_version(api, key, "hasher")
    assert version["status"] == "ready", version["error"]
    body = '{"input": {"text": "a\\ud83db"}}'
    assert json.loads(body)["input"]["text"] == "a\ud83db"
    response = api.request(
        "post", "/api/v1/bundles/hasher/tools/digest/invoke", key=alice.keys["execute"], body=body
    )
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["ok"] is True, result
    node = subprocess.run(
        [
            "node",
            "-e",
            "process.stdout.write(require('crypto').createHash('sha256').update('a\\ufffdb').digest('hex'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert result["output"] == {"hex": node, "uuid": 36, "codes": [97, 0xFFFD, 98]}
