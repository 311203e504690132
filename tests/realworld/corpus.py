"""The real-world corpus: bundles esbuild builds from real npm packages, and what plain Node says of them.

`build_corpus()` runs tests/fixtures/realworld/build.mjs (the Lightfast CLI's esbuild options) once per
content hash of the entry sources, the build script and package-lock.json, caching the bundles under
`$LIGHTFAST_DATA_DIR/realworld-corpus/<hash>/`, so reruns cost nothing. `node_describe` and
`node_invoke` run the same built bundle in Node 20 through tests/fixtures/realworld/node_harness.mjs
(lightfast/* shims, zod mapped as on the platform) for the tests to compare with the sandbox.
Benchmarks use `benchmark_bundles()` (or benchmarks/realworld_bundles.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCES = PROJECT_ROOT / "tests" / "fixtures" / "realworld"
HARNESS = SOURCES / "node_harness.mjs"
# Node runs in UTC, as the sandbox does, so date-formatting tools agree.
NODE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC", "LANG": "C.UTF-8"}


def data_dir() -> Path:
    """The test data directory (LIGHTFAST_DATA_DIR, as the test runs set it), else var/test."""
    return Path(os.environ.get("LIGHTFAST_DATA_DIR") or PROJECT_ROOT / "var" / "test")


def corpus_hash() -> str:
    """Hash of everything the built bundles depend on: entry sources, build script, lockfile, Node."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update((PROJECT_ROOT / "package-lock.json").read_bytes())
    digest.update(subprocess.run(["node", "--version"], capture_output=True, check=True).stdout)
    return digest.hexdigest()[:20]


@functools.cache
def build_corpus() -> dict[str, Path]:
    """Build (or reuse) every corpus bundle; name -> path of the built .mjs file."""
    root = data_dir() / "realworld-corpus"
    target = root / corpus_hash()
    summary_file = target / "summary.json"
    if not summary_file.exists():
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=root))
        try:
            done = subprocess.run(
                ["node", str(SOURCES / "build.mjs"), str(scratch)],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                env=NODE_ENV,
                timeout=300,
            )
            if done.returncode != 0:
                raise RuntimeError(f"building the real-world corpus failed:\n{done.stderr}")
            (scratch / "summary.json").write_text(done.stdout)
            try:
                scratch.rename(target)  # atomic: a concurrent run either sees all of it or none
            except OSError:
                if not summary_file.exists():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for stale in root.iterdir():  # builds of sources that changed since
            if stale != target and stale.is_dir() and not stale.name.startswith("build-"):
                shutil.rmtree(stale, ignore_errors=True)
    summary = json.loads(summary_file.read_text())
    return {name: target / f"{name}.mjs" for name in summary}


def corpus_summary() -> dict[str, dict[str, Any]]:
    """name -> {"bytes", "imports"} of the built corpus, as build.mjs reported it."""
    path = next(iter(build_corpus().values())).parent / "summary.json"
    summary: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return summary


def bundle_path(name: str) -> Path:
    """Path of one built corpus bundle."""
    return build_corpus()[name]


def _harness(path: Path, request: dict[str, Any]) -> Any:
    done = subprocess.run(
        ["node", str(HARNESS), str(path)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=NODE_ENV,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"node harness failed on {path.name}:\n{done.stderr}")
    return json.loads(done.stdout)


@functools.cache
def _describe_cached(path: Path) -> str:
    return json.dumps(_harness(path, {"op": "describe"}))


def node_describe(name: str) -> dict[str, Any]:
    """What Node says of a bundle: metadata, and per agent its name, system, model and tool schemas."""
    described: dict[str, Any] = json.loads(_describe_cached(bundle_path(name)))
    return described


def node_invoke(name: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run tool calls ({agent, tool, input}) in Node, in order, in one process; their results."""
    results: list[dict[str, Any]] = _harness(bundle_path(name), {"op": "invoke", "calls": calls})
    return results


CLI_SHAPED = "cli-shaped"

# The streams-heavy tool of each benchmark bundle: (agent, tool, input). It runs the AI SDK's
# simulateReadableStream through a TransformStream, TextEncoderStream and TextDecoderStream.
STREAMS_TOOLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ai-sdk-agents": (
        "writer",
        "streamDraft",
        {"text": "Streams all the way down: ✓ héllo " * 10, "chunkSize": 7},
    ),
    CLI_SHAPED: ("content-writer", "streamDraft", {"text": "Draft ✓ " * 40}),
}


def largest_bundle() -> tuple[str, Path]:
    """The largest corpus bundle other than the CLI-shaped one (name, path): ai-sdk-agents, the AI SDK
    and three providers inlined, no source map."""
    paths = {name: path for name, path in build_corpus().items() if name != CLI_SHAPED}
    name = max(paths, key=lambda n: paths[n].stat().st_size)
    return name, paths[name]


def cli_shaped_bundle() -> Path:
    """The ~1.3 MB bundle shaped like real CLI output (six agents, AI SDK + gateway inlined)."""
    return bundle_path(CLI_SHAPED)


def benchmark_bundles() -> dict[str, dict[str, Any]]:
    """The two bundles the runtime benchmarks measure, with their streams-heavy tool call, for benchmarks/.

    {"largest": {...}, "cli_shaped": {...}}, each {"name", "path", "bytes", "agent", "tool", "input"}.
    """
    largest, _ = largest_bundle()
    out: dict[str, dict[str, Any]] = {}
    for label, name in (("largest", largest), ("cli_shaped", CLI_SHAPED)):
        path = bundle_path(name)
        agent, tool, tool_input = STREAMS_TOOLS[name]
        out[label] = {
            "name": name,
            "path": str(path),
            "bytes": path.stat().st_size,
            "agent": agent,
            "tool": tool,
            "input": tool_input,
        }
    return out
