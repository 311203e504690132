"""Node-compat modules: bundles importing Node built-ins run and give what Node 20 gives.

The same cases (tests/fixtures/sandbox/node/cases.mjs) run in plain Node and, as tools of one bundle,
in the jailed sandbox through the real pool; their outputs must be equal. A bundle built by esbuild
from the real nanoid 5 package with the Lightfast CLI's options (its Node entry imports
`node:crypto`) uploads and runs. Refused built-ins (fs, child_process, net, ...) are named at upload
with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.transform import NODE_MODULES, NODE_REFUSED, TransformedBundle, transform

ROOT = Path(__file__).resolve().parents[3]
NODE_FIXTURES = ROOT / "tests" / "fixtures" / "sandbox" / "node"
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"
HOSTILE = ROOT.parent / "shared" / "bundles" / "hostile"
CONTEXT = {"sessionId": "session-1", "resourceId": "org_alice"}
INPUT = {"text": 'héllo wörld € \u2028 "q"', "key": "s3cret-kéy", "file": "report.txt"}
# The Lightfast CLI's esbuild options (platform node, ESM, everything inlined but these).
CLI_FLAGS = (
    "--bundle",
    "--format=esm",
    "--platform=node",
    "--target=es2022",
    "--external:lightfast",
    "--external:lightfast/*",
    "--external:@lightfastai/core",
    "--external:node:*",
    "--external:zod",
    "--log-level=warning",
)

pytestmark = pytest.mark.timeout(180)


def _invoke(bundle: TransformedBundle, agent: str, tool: str, input: Any) -> api.InvokeResult:
    return api.invoke(
        bundle,
        agent=agent,
        tool=tool,
        input=input,
        context=CONTEXT,
        env={},
        egress=EgressPolicy(),
        limits=Limits(),
        bundle_key="org_alice:node-compat",
    )


def _node_outputs(cases: Path, input: Any) -> dict[str, Any]:
    """Every case of `cases` run by plain Node, as JSON."""
    runner = (
        "const { cases } = await import(process.argv[1]);"
        "const input = JSON.parse(process.argv[2]); const out = {};"
        "for (const name of Object.keys(cases))"
        " out[name] = JSON.parse(JSON.stringify(await cases[name](input)));"
        "process.stdout.write(JSON.stringify(out));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", runner, str(cases), json.dumps(input)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def compat_bundle() -> TransformedBundle:
    source = (
        (NODE_FIXTURES / "cases.mjs").read_text() + "\n" + (NODE_FIXTURES / "node-compat.mjs.in").read_text()
    )
    return transform(source.encode())


@pytest.fixture(scope="module")
def node_outputs() -> dict[str, Any]:
    return _node_outputs(NODE_FIXTURES / "cases.mjs", INPUT)


def test_every_node_module_is_allowed_under_both_names(compat_bundle: TransformedBundle) -> None:
    assert {"node:crypto", "node:buffer", "node:events", "crypto", "events"} <= set(compat_bundle.imports)
    for name in NODE_MODULES:
        source = f'import * as m from "{name}";\nimport * as n from "node:{name}";\nexport {{ m, n }};\n'
        assert transform(source.encode()).imports == [name, f"node:{name}"]


@pytest.mark.parametrize(
    "case",
    [
        "hashes",
        "hmacs",
        "random",
        "buffers",
        "events",
        "utils",
        "paths",
        "decoders",
        "urls",
        "asserts",
        "timersAndStreams",
    ],
)
def test_case_gives_what_node_20_gives(
    compat_bundle: TransformedBundle, node_outputs: dict[str, Any], case: str
) -> None:
    result = _invoke(compat_bundle, "node", case, INPUT)
    assert result.ok, result.error
    assert result.output == node_outputs[case]


def test_node_case_outputs_are_the_known_digests(node_outputs: dict[str, Any]) -> None:
    # Guards the comparison itself: Node computed real digests (sha256 of "abc" style checks).
    hashes = node_outputs["hashes"]
    assert (
        hashes["copy"][1] == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    )  # sha256("a")
    assert hashes["unknown"] == "Digest method not supported"
    assert node_outputs["buffers"]["fromB64"] == "hello world"


def test_node_modules_are_built_only_when_imported() -> None:
    # A bundle that imports nothing from Node still sees a lazy global Buffer; typeof builds it.
    source = b"""
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
const before = Object.getOwnPropertyDescriptor(globalThis, "Buffer");
const probe = createTool({ description: "p", execute: async () => {
  const lazy = typeof before.get === "function" && !("value" in before);
  const kind = typeof Buffer;
  const after = Object.getOwnPropertyDescriptor(globalThis, "Buffer");
  const hello = Buffer.from("hi").toString("hex");
  return { lazy, kind, settled: "value" in after && after.writable, hello };
}});
const replaced = createTool({ description: "r",
  execute: async () => { globalThis.Buffer = 7; return Buffer; } });
export default createLightfast({ agents: { a: createAgent({ name: "a", system: "s", model: "demo",
  tools: { probe, replaced } }) } });
"""
    bundle = transform(source)
    result = _invoke(bundle, "a", "probe", {})
    assert result.ok, result.error
    assert result.output == {"lazy": True, "kind": "function", "settled": True, "hello": "6869"}
    replaced = _invoke(bundle, "a", "replaced", {})
    assert replaced.ok and replaced.output == 7


def _esbuild_cli_bundle(tmp_path: Path, entry_source: str) -> bytes:
    """What the Lightfast CLI makes of `entry_source` (resolved against the project's node_modules)."""
    entry = ROOT / "node_modules" / ".lightfast-test-entry.mjs"
    out = tmp_path / "bundle.mjs"
    entry.write_text(entry_source)
    try:
        subprocess.run([str(ESBUILD), str(entry), *CLI_FLAGS, f"--outfile={out}"], check=True, timeout=60)
    finally:
        entry.unlink()
    return out.read_bytes()


NANOID_ENTRY = """
import { nanoid, customAlphabet, urlAlphabet } from "nanoid";
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";

const makeIds = createTool({
  description: "Make ids with nanoid",
  inputSchema: z.object({ count: z.number().int().min(1).max(50), size: z.number().int().default(21) }),
  execute: async ({ count, size }) => {
    const digits = customAlphabet("0123456789", 8);
    const ids = Array.from({ length: count }, () => nanoid(size));
    return { ids, digits: digits(), alphabet: urlAlphabet.length };
  },
});
export default createLightfast({
  agents: {
    ids: createAgent({ name: "ids", system: "Makes ids", model: "openai/gpt-4o-mini", tools: { makeIds } }),
  },
});
"""


def test_real_nanoid_5_built_like_the_cli_imports_node_crypto_and_runs(tmp_path: Path) -> None:
    data = _esbuild_cli_bundle(tmp_path, NANOID_ENTRY)
    text = data.decode()
    assert re.search(r'from\s*"node:crypto"', text), "nanoid's Node entry should keep its node:crypto import"
    bundle = transform(data)
    assert "node:crypto" in bundle.imports
    manifest = api.introspect(bundle)
    assert set(manifest["agents"]["ids"]["tools"]) == {"makeIds"}
    result = _invoke(bundle, "ids", "makeIds", {"count": 30, "size": 12})
    assert result.ok, result.error
    ids = result.output["ids"]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{12}", i) for i in ids)
    assert re.fullmatch(r"[0-9]{8}", result.output["digits"])
    assert result.output["alphabet"] == 64
    # Node's own build of the same entry agrees on the shape (ids are random, so only their form).
    again = _invoke(bundle, "ids", "makeIds", {"count": 30, "size": 12})
    assert again.ok and set(again.output["ids"]).isdisjoint(ids)


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        ("fs", "bundles have no file system; use fetch for remote data"),
        ("node:fs/promises", "bundles have no file system"),
        ("child_process", "cannot start processes"),
        ("node:net", "bundles have no sockets; use fetch"),
        ("https", "bundles have no sockets"),
        ("node:worker_threads", "cannot start processes or threads"),
        ("vm", "cannot load or evaluate other code"),
        ("os", "do not see the machine"),
    ],
)
def test_refused_node_builtins_are_named_with_the_reason(module: str, reason: str) -> None:
    source = f'import * as m from "{module}";\nexport default m;\n'.encode()
    with pytest.raises(SandboxError) as raised:
        transform(source)
    error = raised.value
    bare = module.removeprefix("node:")
    assert error.code == "invalid_bundle"
    assert f"`{bare}` is not available in the sandbox: " in error.message
    assert reason in error.message
    assert "Node modules offered: assert, assert/strict, buffer, crypto" in error.message
    assert error.detail["imports"] == [module]
    assert error.detail["reasons"] == {module: NODE_REFUSED[bare]}


def test_shared_hostile_node_builtins_bundle_stays_refused() -> None:
    with pytest.raises(SandboxError) as raised:
        transform((HOSTILE / "node-builtins.mjs").read_bytes())
    message = raised.value.message
    assert raised.value.code == "invalid_bundle"
    assert '"fs", "child_process"' in message
    assert "`fs` is not available in the sandbox: bundles have no file system" in message
    assert "`child_process` is not available in the sandbox: bundles cannot start processes" in message


def test_a_dynamic_require_of_a_refused_builtin_fails_with_the_reason() -> None:
    # esbuild's ESM output calls the module's `require` for require() calls it left in inlined CJS
    # code; the runtime answers offered modules and explains refused ones.
    source = b"""
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
const load = createTool({ description: "l", execute: async ({ name }) => {
  const mod = require(name);
  return Object.keys(mod).includes("createHash") || typeof mod.Buffer === "function";
}});
const a = createAgent({ name: "a", system: "s", model: "demo", tools: { load } });
export default createLightfast({ agents: { a } });
"""
    bundle = transform(source)
    assert _invoke(bundle, "a", "load", {"name": "node:crypto"}).output is True
    assert _invoke(bundle, "a", "load", {"name": "buffer"}).output is True
    refused = _invoke(bundle, "a", "load", {"name": "fs"})
    assert not refused.ok and refused.error is not None
    assert refused.error["type"] == "invalid_bundle"
    assert refused.error["message"] == (
        'module "fs" is not available in the sandbox: bundles have no file system; '
        "use fetch for remote data, or put the data in the bundle"
    )


def _requiring_bundle(names: list[str]) -> TransformedBundle:
    requires = ", ".join(f'"{name}": typeof require("{name}")' for name in names)
    source = f"""
import {{ createLightfast }} from "lightfast/client";
import {{ createAgent }} from "lightfast/agent";
import {{ createTool }} from "lightfast/tool";
const kinds = {{ {requires} }};
const kindsOf = createTool({{ description: "k", execute: async () => kinds }});
const a = createAgent({{ name: "a", system: "s", model: "demo", tools: {{ kindsOf }} }});
export default createLightfast({{ agents: {{ a }} }});
"""
    return transform(source.encode())


def test_every_offered_module_builds_in_the_sandbox() -> None:
    names = [*NODE_MODULES, *(f"node:{name}" for name in NODE_MODULES)]
    result = _invoke(_requiring_bundle(names), "a", "kindsOf", {})
    assert result.ok, result.error
    assert set(result.output) == set(names)
    assert all(kind in {"object", "function"} for kind in result.output.values()), result.output


def test_the_node_modules_code_is_compiled_only_for_bundles_that_import_one() -> None:
    # The JS heap of a call (peak_memory_bytes) holds the zygote's heap: ~2 MB more bytecode when
    # the bundle required a Node module at load, nothing more when it did not.
    without = _invoke(_requiring_bundle([]), "a", "kindsOf", {})
    with_events = _invoke(_requiring_bundle(["node:events"]), "a", "kindsOf", {})
    assert without.ok and with_events.ok
    assert with_events.usage["peak_memory_bytes"] > without.usage["peak_memory_bytes"] + 1_000_000


def test_the_runtime_refuses_the_same_modules_for_the_same_reasons_as_the_upload_check() -> None:
    source = b"""
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
const reasons = createTool({ description: "r", execute: async ({ names }) => names.map((name) => {
  try { require(name); return "loaded"; } catch (error) { return error.message; }
}) });
const a = createAgent({ name: "a", system: "s", model: "demo", tools: { reasons } });
export default createLightfast({ agents: { a } });
"""
    names = [*NODE_REFUSED, *(f"node:{name}" for name in NODE_REFUSED)]
    result = _invoke(transform(source), "a", "reasons", {"names": names})
    assert result.ok, result.error
    expected = [
        f'module "{name}" is not available in the sandbox: {NODE_REFUSED[name.removeprefix("node:")]}'
        for name in names
    ]
    assert result.output == expected
