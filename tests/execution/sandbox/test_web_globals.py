"""The sandbox's non-stream web globals against plain Node 20 on the same JS.

tests/fixtures/sandbox/web-globals-cases.js defines CASES: each case runs once as a tool of a real
bundle in the sandbox and once in `node` (TZ=UTC, the sandbox clock's zone); the JSON outputs must
be equal, except for the few Intl outputs listed in INTL_DIFFERENCES (FormatJS's data vs Node's ICU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from execution.sandbox.engine import Engine
from execution.sandbox.transform import transform
from tests.execution.sandbox.engine_harness import (
    FIXTURES,
    CannedHost,
    NativeEngine,
    invoke_in_fork,
    native_requested,
)

CASES_SOURCE = (FIXTURES / "web-globals-cases.js").read_text()
CASE_NAMES = [
    "digest",
    "hmac",
    "aesGcm",
    "kdf",
    "randomValues",
    "encoding",
    "base64",
    "clone",
    "urls",
    "intl",
    "misc",
    "timers",
]

BUNDLE_HEAD = """
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
"""

BUNDLE_TAIL = """
var tools = {};
for (const name of Object.keys(CASES)) {
  tools[name] = createTool({
    description: "web globals case " + name,
    inputSchema: z.object({}),
    execute: async () => JSON.parse(JSON.stringify(await CASES[name]())),
  });
}
tools.sandboxOnly = createTool({
  description: "globals Node 20 lacks or shapes differently",
  inputSchema: z.object({}),
  execute: async () => ({
    self: self === globalThis,
    crypto: [crypto instanceof Crypto, Object.prototype.toString.call(crypto)],
    intlWarm: Object.getOwnPropertyDescriptor(globalThis, "Intl").value !== undefined,
  }),
});
tools.intlFallback = createTool({
  description: "a locale without data",
  inputSchema: z.object({}),
  execute: async () => ({
    fr: (1234.5).toLocaleString("fr-FR"),
    supported: Intl.NumberFormat.supportedLocalesOf(["en-US", "de-DE", "en-GB"]),
    frSupported: Intl.DateTimeFormat.supportedLocalesOf(["fr-FR"]),
  }),
});
tools.env = createTool({
  description: "process.env", inputSchema: z.object({}), execute: async () => ({ ...process.env }),
});
tools.immediateFlood = createTool({
  description: "setImmediate counts against the pending-timer cap",
  inputSchema: z.object({}),
  execute: async () => {
    let n = 0;
    try {
      for (; n < 20000; n++) setImmediate(() => {});
    } catch (e) {
      return { n, error: e.name + ": " + e.message };
    }
    return { n, error: null };
  },
});
tools.fetchWithBrokenURL = createTool({
  description: "fetch after the bundle replaced URL.prototype.protocol",
  inputSchema: z.object({}),
  execute: async () => {
    Object.defineProperty(URL.prototype, "protocol", { get() { return "https:"; }, configurable: true });
    try {
      const res = await fetch("ftp://files.example.com/x");
      return { status: res.status };
    } catch (e) {
      return { error: e.name + ": " + e.message };
    }
  },
});
var agent = createAgent({ name: "web", system: "web globals", model: "openai/gpt-4o", tools });
export default createLightfast({
  agents: { web: agent }, metadata: { name: "web-globals-node", version: "0.0.1" },
});
"""

NODE_DRIVER = """
(async () => {
  const out = {};
  for (const name of Object.keys(CASES)) out[name] = JSON.parse(JSON.stringify(await CASES[name]()));
  process.stdout.write(JSON.stringify(out));
})();
"""

# Where Node 20 departs from the standard and the sandbox follows the standard: exporting a
# non-extractable key rejects with an "InvalidAccessError" (Web Crypto, exportKey step 6); Node 20
# names it "InvalidAccessException".
STANDARD_OVER_NODE = {("hmac", "jwkNotExtractable"): "throws InvalidAccessError (DOMException)"}

# Intl outputs where FormatJS's CLDR data and Node 20's ICU differ (checked to be the only ones).
INTL_DIFFERENCES: dict[str, Any] = {
    # With a zone name shown, FormatJS pads the en-GB hour to two digits where ICU does not.
    "ny en-GB": ("05/03/2024, 09:07:09 GMT-5", "05/03/2024, 9:07:09 GMT-5"),
}


@pytest.fixture(scope="module")
def engine() -> Any:
    script = transform((BUNDLE_HEAD + CASES_SOURCE + BUNDLE_TAIL).encode()).script
    env = {"REGION": "eu-west", "API_BASE": "https://api.example.com"}
    if native_requested():
        native = NativeEngine(script, env=env, limits=None)
        yield native
        native.close()
        return
    plain = Engine()
    plain.load(script, env=env)
    yield plain


@pytest.fixture(scope="module")
def node_outputs() -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node (20) is needed on PATH to compare the sandbox with"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v20."), version
    done = subprocess.run(
        [node, "-e", CASES_SOURCE + NODE_DRIVER],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
        check=True,
    )
    out: dict[str, Any] = json.loads(done.stdout)
    for (case, key), standard in STANDARD_OVER_NODE.items():
        assert out[case][key] != standard, "Node now follows the standard here: drop the exception"
        out[case][key] = standard
    return out


def run(engine: Any, tool: str, host: CannedHost | None = None) -> Any:
    result = invoke_in_fork(engine, agent="web", tool=tool, host=host)
    assert result["ok"] is True, result
    return result["output"]


@pytest.mark.parametrize("case", [c for c in CASE_NAMES if c != "intl"])
def test_case_matches_node(engine, node_outputs, case):
    assert run(engine, case) == node_outputs[case]


def test_intl_matches_node(engine, node_outputs):
    ours = run(engine, "intl")
    theirs = node_outputs["intl"]
    assert set(ours) == set(theirs)
    differing = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert differing == INTL_DIFFERENCES


def test_intl_locales_without_data_fall_back_to_en(engine):
    # fr-FR is not carried (only en, en-GB, de): formatting falls back to en, as the lookup gives
    # (Node, with all of ICU, writes "1 234,5").
    out = run(engine, "intlFallback")
    assert out == {"fr": "1,234.5", "supported": ["en-US", "de-DE", "en-GB"], "frSupported": []}


def test_every_case_ran(node_outputs):
    assert sorted(node_outputs) == sorted(CASE_NAMES)


def test_known_answers_without_node(engine):
    # Fixed vectors (FIPS 180 / RFC 4231 style), so the comparison above is not the only check.
    out = run(engine, "digest")
    assert out['"SHA-256"'] == "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
    assert out['"SHA-1"'] == "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
    assert out["md5"] == "throws NotSupportedError (DOMException)"
    kdf = run(engine, "kdf")
    assert kdf["pbkdf2Sha1"] == "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"  # RFC 6070, c=2
    enc = run(engine, "encoding")
    assert enc["hello4"] == [4, 4, [104, 101, 108, 108]]


def test_globals_node_lacks(engine):
    # This bundle's code mentions toLocaleString, so Intl was evaluated at load, in the zygote.
    assert run(engine, "sandboxOnly") == {"self": True, "crypto": [True, "[object Crypto]"], "intlWarm": True}


LAZY_BUNDLE = (
    BUNDLE_HEAD
    + """
const name = ["In", "tl"].join("");  // the bundle never spells the global's name
var tools = {
  probe: createTool({
    description: "is the global still the lazy accessor?",
    inputSchema: z.object({}),
    execute: async () => {
      const before = typeof Object.getOwnPropertyDescriptor(globalThis, name).get;
      const formatted = new globalThis[name].NumberFormat("de-DE").format(1234.5);
      const after = typeof Object.getOwnPropertyDescriptor(globalThis, name).get;
      return { before, formatted, after };
    },
  }),
};
var agent = createAgent({ name: "web", system: "lazy", model: "openai/gpt-4o", tools });
export default createLightfast({ agents: { web: agent } });
"""
)


def test_intl_is_evaluated_on_first_use_only():
    script = transform(LAZY_BUNDLE.encode()).script
    if native_requested():
        lazy: Any = NativeEngine(script, env={}, limits=None)
    else:
        lazy = Engine()
        lazy.load(script, env={})
    try:
        for _ in range(2):  # each call starts from the zygote, where Intl was never evaluated
            assert run(lazy, "probe") == {"before": "function", "formatted": "1.234,5", "after": "undefined"}
    finally:
        if native_requested():
            lazy.close()


def test_process_env_is_the_organization_variables(engine):
    assert run(engine, "env") == {"REGION": "eu-west", "API_BASE": "https://api.example.com"}


def test_set_immediate_obeys_the_pending_timer_cap(engine):
    out = run(engine, "immediateFlood")
    assert out["n"] == 10000
    assert out["error"] == "RangeError: more than 10000 pending timers"


def test_fetch_checks_the_scheme_with_captured_accessors(engine):
    host = CannedHost()
    out = run(engine, "fetchWithBrokenURL", host=host)
    # The bundle's URL.prototype.protocol says https, the runtime's own reading says ftp.
    assert out == {"error": "TypeError: only http and https URLs can be fetched, not ftp:"}
    assert host.requests == []


def test_introspection_loads_do_not_warm_lazy_globals():
    # warm=False is what introspection sends (pool.py, runner.py): the bundle mentions
    # toLocaleString, yet Intl stays the lazy accessor; a call still gets a working Intl.
    engine = Engine()
    engine.load(transform((BUNDLE_HEAD + CASES_SOURCE + BUNDLE_TAIL).encode()).script, env={}, warm=False)
    out = invoke_in_fork(engine, agent="web", tool="sandboxOnly")
    assert out["ok"] is True, out
    assert out["output"]["intlWarm"] is False
    assert invoke_in_fork(engine, agent="web", tool="intlFallback")["output"]["fr"] == "1,234.5"
