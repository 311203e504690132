"""Corpus, escapes: constructor chains, stack-trace hooks, module loading, host bridges on the global,
QuickJS's std/os, WebAssembly, bytecode, the host's environment and files.

Each tool reports what it reached; the harmless check proves it reached nothing of the host.
"""

# ruff: noqa: E501 - the cases are JavaScript sources, kept one statement a line

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings

from execution.sandbox.egress import EgressPolicy
from tests.security.corpus import SAMPLES, CorpusSandbox, corpus_fixtures

# Names through which an embedding usually exposes the host: QuickJS's own modules and helpers,
# Node/Deno/Bun objects, the runtime's private API, engine debugging hooks.
HOST_NAMES = [
    "std",
    "os",
    "bjson",
    "scriptArgs",
    "print",
    "gc",
    "__loadScript",
    "load",
    "read",
    "readFile",
    "readbuffer",
    "quit",
    "evalScript",
    "require",
    "module",
    "exports",
    "__filename",
    "__dirname",
    # Not "Buffer": the sandbox offers its own (npm `buffer`, a lazy global; docs/runtime.md).
    "Deno",
    "Bun",
    "global",
    "__lightfastRuntime",
    "__lightfast",
    "lightfast",
    "host",
    "WebAssembly",
    "XMLHttpRequest",
    "WebSocket",
    "importScripts",
    "Worker",
    "SharedWorker",
    "navigator",
    "location",
    "document",
    "open",
    "system",
    "spawn",
    "exec",
    "_native",
    "native",
]

# zod (a module the platform provides inside the sandbox) keeps its registries on `__zod_*` globals.
PROBE_GLOBAL = """(g) => {
      const names = HOST_NAMES_JSON;
      const found = names.filter((n) => { try { return typeof g[n] !== "undefined"; } catch (e) { return true; } });
      const odd = Object.getOwnPropertyNames(g).filter((n) => /^__(?!zod_)|native|host|lightfast|runtime|bridge|engine/i.test(n));
      return { found, odd };
    }""".replace("HOST_NAMES_JSON", json.dumps(HOST_NAMES))

TOOLS: dict[str, str] = {
    "objectConstructorChain": f"""function () {{
      const g = ({{}}).constructor.constructor("return this")();
      const viaThis = this && this.constructor ? this.constructor.constructor("return this")() : g;
      return {{ same: g === globalThis && viaThis === globalThis, ...({PROBE_GLOBAL})(g) }};
    }}""",
    "asyncFunctionConstructor": f"""async () => {{
      const AsyncFunction = (async function () {{}}).constructor;
      const g = await AsyncFunction("return globalThis")();
      const proc = await AsyncFunction("return typeof process === 'object' ? process : null")();
      return {{ same: g === globalThis, env: proc ? Object.keys(proc.env) : null, ...({PROBE_GLOBAL})(g) }};
    }}""",
    "generatorConstructors": f"""() => {{
      const Gen = (function* () {{}}).constructor;
      const AsyncGen = (async function* () {{}}).constructor;
      const g = Gen("yield this")().next().value;
      const viaArrowFn = (() => {{}}).constructor("return this")();
      return {{ same: g === globalThis && viaArrowFn === globalThis && typeof AsyncGen === "function",
               ...({PROBE_GLOBAL})(g) }};
    }}""",
    "prepareStackTraceCallSites": """() => {
      const leaked = [];
      try {
        Error.prepareStackTrace = (error, frames) => {
          for (const f of frames) {
            try { leaked.push(typeof f.getFunction === "function" ? String(typeof f.getFunction()) : "none"); } catch (e) {}
            try { if (typeof f.getThis === "function" && f.getThis() !== undefined) leaked.push("this"); } catch (e) {}
          }
          return frames;
        };
      } catch (e) {}
      const stack = new Error("probe").stack;
      let captured = null;
      try { const o = {}; Error.captureStackTrace(o); captured = typeof o.stack; } catch (e) { captured = "unsupported"; }
      return { stackType: typeof stack, hookKept: typeof Error.prepareStackTrace, leaked, captured };
    }""",
    "stackGetterHook": """() => {
      const attempts = {};
      try { Object.defineProperty(Error.prototype, "stack", { get() { return Function; } }); attempts.proto = "defined"; }
      catch (e) { attempts.proto = e.name; }
      try { Error.prototype.__defineGetter__("stack", () => Function); attempts.legacy = "defined"; }
      catch (e) { attempts.legacy = e.name; }
      let stackIsFunction = false;
      try { stackIsFunction = typeof new Error("x").stack === "function"; } catch (e) {}
      return { attempts, stackIsFunction };
    }""",
    "dynamicImportHostModules": """async () => {
      const names = ["qjs:std", "qjs:os", "qjs:bjson", "std", "os", "fs", "node:fs", "child_process",
        "/etc/passwd", "file:///etc/passwd", "/proc/self/environ", "../../../../../../etc/passwd",
        "./bundle.js", "data:text/javascript,export default globalThis", "http://127.0.0.1/x.js"];
      const loaded = [];
      for (const name of names) {
        const computed = [name].join("");
        try { const m = await import(computed); loaded.push(name + " via import: " + Object.keys(m).join(",")); } catch (e) {}
        try {
          const viaFunction = await Function("n", "return import(n)")(computed);
          loaded.push(name + " via Function import: " + Object.keys(viaFunction).join(","));
        } catch (e) {}
      }
      return { loaded };
    }""",
    "requireHostModules": """() => {
      const names = ["fs", "node:fs", "child_process", "net", "os", "std", "qjs:os", "qjs:std", "module",
        "process", "constructor", "__proto__", "hasOwnProperty", "toString", "valueOf", "lightfast/../../fs",
        "zod/../../../../etc/passwd", "", "lightfast", "lightfast/runtime"];
      const loaded = [];
      const r = typeof require === "function" ? require : null;
      for (const name of names) {
        try { const m = r ? r(name) : undefined; if (m !== undefined && m !== null) loaded.push(name); } catch (e) {}
      }
      let viaFunction = "none";
      try { viaFunction = typeof Function("return typeof require === 'function' ? require('fs') : undefined")(); }
      catch (e) { viaFunction = "blocked"; }
      return { loaded, viaFunction };
    }""",
    "globalProbe": f"""() => {{
      const g = globalThis;
      const protoChain = [];
      for (let p = Object.getPrototypeOf(g); p; p = Object.getPrototypeOf(p)) protoChain.push(Object.getOwnPropertyNames(p).length);
      const viaConsole = console.log.constructor("return this")() === g;
      const viaTimers = setTimeout.constructor("return this")() === g;
      const viaFetch = fetch.constructor("return this")() === g;
      return {{ ...({PROBE_GLOBAL})(g), viaConsole, viaTimers, viaFetch, protoChain }};
    }}""",
    "quickjsStdOs": """() => {
      const found = [];
      for (const name of ["std", "os", "bjson"]) {
        try { if (typeof eval(name) !== "undefined") found.push(name); } catch (e) {}
        try { if (typeof Function("return typeof " + name)() !== "string" || Function("return typeof " + name)() !== "undefined") found.push(name + "(function)"); } catch (e) {}
      }
      return { found };
    }""",
    "webAssembly": """() => ({
      type: typeof WebAssembly,
      viaGlobal: typeof globalThis["WebAssembly"],
      viaFunction: Function("return typeof WebAssembly")(),
    })""",
    "bytecodeEval": """() => {
      // QuickJS bytecode starts with a version byte; an engine that accepts it would run it.
      const blobs = [String.fromCharCode(2, 5, 0, 0, 1, 2, 3), "\\u0005\\u0000\\u0013", String.fromCharCode(0x43, 0x01, 0x00)];
      const outcomes = [];
      for (const blob of blobs) {
        try { eval(blob); outcomes.push("ran"); } catch (e) { outcomes.push(e.name); }
        try { Function(blob)(); outcomes.push("ran"); } catch (e) { outcomes.push(e.name); }
      }
      let readObject = "absent";
      for (const name of ["bjson", "std", "os"]) {
        try { if (typeof globalThis[name] !== "undefined") readObject = name; } catch (e) {}
      }
      return { outcomes, readObject };
    }""",
    "processEnvironment": """() => ({
      env: { ...process.env },
      keys: Reflect.ownKeys(process.env).map(String),
      secret: process.env.SECRET_KEY ?? null,
      django: process.env.DJANGO_SETTINGS_MODULE ?? null,
      path: process.env.PATH ?? null,
      home: process.env.HOME ?? null,
      processKeys: Object.getOwnPropertyNames(process).sort(),
      protoEnv: Object.getPrototypeOf(process.env) === Object.prototype,
    })""",
    "environmentAtLoad": """() => ({ env: loadEnv })""",
    "procAndFileReads": """async () => {
      const attempts = [];
      for (const url of ["file:///proc/self/environ", "file:///proc/self/maps", "file:///etc/passwd",
                         "file:///proc/1/cmdline", "/proc/self/environ"]) {
        try { const r = await fetch(url); attempts.push(url + " -> " + r.status + " " + (await r.text()).slice(0, 50)); }
        catch (e) { attempts.push(e.name); }
      }
      return { attempts };
    }""",
    "procViaFetchUncaught": """async () => (await fetch("file:///proc/self/environ")).text()""",
    "hostSecretInReachableStrings": """() => {
      // Anything a bundle can stringify: the runtime's functions, the global, process, errors.
      const texts = [];
      for (const v of [fetch, setTimeout, console.log, require, process.nextTick, Object.getOwnPropertyNames(globalThis).join(",")]) {
        try { texts.push(Function.prototype.toString.call(v)); } catch (e) { texts.push(String(v)); }
      }
      texts.push(new Error("x").stack);
      try { null.x; } catch (e) { texts.push(e.stack); }
      return { text: texts.join("\\n").slice(0, 50000) };
    }""",
}

TOP_LEVEL = "var loadEnv = { ...process.env };\n"


# Module-scoped fixtures: `sandbox` (a one-worker pool, or Docker) and `bundle` (every tool of TOOLS).
sandbox, bundle = corpus_fixtures("escapes", TOOLS, top_level=TOP_LEVEL)


def _nothing_found(output: dict[str, Any]) -> None:
    assert output["found"] == [] and output["odd"] == [], output
    assert output.get("same", True) is True, output


@pytest.mark.parametrize(
    "tool", ["objectConstructorChain", "asyncFunctionConstructor", "generatorConstructors", "globalProbe"]
)
def test_constructor_chains_reach_only_the_sandbox_global(
    sandbox: CorpusSandbox, bundle: Any, tool: str
) -> None:
    result = sandbox.attack(bundle, tool, harmless=_nothing_found)
    if tool == "asyncFunctionConstructor":
        assert result.output["env"] == []
    if tool == "globalProbe":
        assert result.output["viaConsole"] and result.output["viaTimers"] and result.output["viaFetch"]


def test_prepare_stack_trace_hands_out_no_call_sites(sandbox: CorpusSandbox, bundle: Any) -> None:
    def check(output: dict[str, Any]) -> None:
        assert output["stackType"] == "string", output
        assert output["hookKept"] == "undefined", output
        assert output["leaked"] == [], output
        assert output["captured"] in {"string", "unsupported"}, output

    sandbox.attack(bundle, "prepareStackTraceCallSites", harmless=check)


def test_stack_getter_cannot_be_replaced(sandbox: CorpusSandbox, bundle: Any) -> None:
    def check(output: dict[str, Any]) -> None:
        assert output["stackIsFunction"] is False, output
        assert output["attempts"]["proto"] == "TypeError", output

    sandbox.attack(bundle, "stackGetterHook", harmless=check)


def test_dynamic_import_loads_no_host_module(sandbox: CorpusSandbox, bundle: Any) -> None:
    sandbox.attack(bundle, "dynamicImportHostModules", harmless=lambda out: out == {"loaded": []})


def test_require_reaches_only_the_platform_modules(sandbox: CorpusSandbox, bundle: Any) -> None:
    sandbox.attack(
        bundle,
        "requireHostModules",
        # `process` is a Node module the sandbox offers: the global process object (docs/runtime.md).
        harmless=lambda out: (
            out["loaded"] in ([], ["process"]) and out["viaFunction"] in {"undefined", "blocked"}
        ),
    )


def test_no_quickjs_std_or_os(sandbox: CorpusSandbox, bundle: Any) -> None:
    sandbox.attack(bundle, "quickjsStdOs", harmless=lambda out: out == {"found": []})


def test_no_webassembly(sandbox: CorpusSandbox, bundle: Any) -> None:
    sandbox.attack(bundle, "webAssembly", harmless=lambda out: set(out.values()) == {"undefined"})


def test_engine_accepts_source_only_never_bytecode(sandbox: CorpusSandbox, bundle: Any) -> None:
    def check(output: dict[str, Any]) -> None:
        assert "ran" not in output["outcomes"], output
        assert set(output["outcomes"]) <= {"SyntaxError"}, output
        assert output["readObject"] == "absent", output

    sandbox.attack(bundle, "bytecodeEval", harmless=check)


def test_process_env_shows_only_the_organizations_variables(sandbox: CorpusSandbox, bundle: Any) -> None:
    env = {"ORG_VARIABLE": "org-value", "OTHER": "2"}

    def check(output: dict[str, Any]) -> None:
        assert output["env"] == env and sorted(output["keys"]) == sorted(env), output
        assert output["secret"] is None and output["django"] is None, output
        assert output["path"] is None and output["home"] is None, output

    result = sandbox.attack(bundle, "processEnvironment", env=env, harmless=check)
    assert settings.SECRET_KEY not in repr(result.to_dict())
    at_load = sandbox.attack(bundle, "environmentAtLoad", env=env, harmless=lambda out: out == {"env": env})
    assert settings.SECRET_KEY not in repr(at_load.to_dict())


def test_no_file_or_proc_reads(sandbox: CorpusSandbox, bundle: Any) -> None:
    def check(output: dict[str, Any]) -> None:
        assert all(" -> " not in attempt for attempt in output["attempts"]), output

    sandbox.attack(bundle, "procAndFileReads", harmless=check)
    sandbox.attack(
        bundle, "procViaFetchUncaught", errors={"egress_denied"}, egress=EgressPolicy(allow_hosts=["*"])
    )


def test_reachable_strings_hold_no_host_secret_or_path(sandbox: CorpusSandbox, bundle: Any) -> None:
    def check(output: dict[str, Any]) -> None:
        text = output["text"]
        assert settings.SECRET_KEY not in text
        assert str(settings.DATA_DIR) not in text and "/work/" not in text, text[:2000]

    sandbox.attack(bundle, "hostSecretInReachableStrings", harmless=check)


def test_shared_hostile_escape_tools(sandbox: CorpusSandbox) -> None:
    """The shared hostile sample's escape tools, under the corpus' four-part assertion."""
    from execution.sandbox.transform import transform

    shared = transform((SAMPLES / "hostile" / "tools.mjs").read_bytes())
    checks = {
        "escapeProcess": lambda out: out["env"] == [],
        "escapeRequire": lambda out: set(out.values()) <= {"blocked", "no require"},
        "dynamicImport": lambda out: "blocked" in out,
    }
    for tool, check in checks.items():
        sandbox.attack(shared, tool, agent="hostile", harmless=check)
