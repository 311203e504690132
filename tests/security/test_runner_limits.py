"""The native runner's smaller limit findings: arena size arithmetic, OOM classification, peak memory.

* arena_realloc: a size near SIZE_MAX wrapped the block-size arithmetic to a small block that
  "fit" in place, handing QuickJS a block far smaller than it asked for. Checked on the allocator
  itself (tests/security/arena_probe.c, built here against runner.c).
* An out-of-memory that bundle code swallowed (in a timer callback or a promise job) left the tool's
  promise unsettled and the call was reported as timeout / nothing_pending: it is memory_limit.
* peak_memory_bytes was sampled at idle points, so typed arrays allocated and freed in between
  were missed: the peak is now tracked at allocation time.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.limits import Limits
from execution.sandbox.native import BINARY
from execution.sandbox.pool import runner_from_env
from execution.sandbox.transform import TransformedBundle, transform

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "execution" / "sandbox" / "native"
MIB = 1024 * 1024

BUNDLE = b"""
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
var empty = z.object({});
var bomb = () => { const a = []; while (true) a.push(new Array(1e5).fill(1)); };
var tools = {
  oomInTimer: createTool({ description: "OOM in a timer callback", inputSchema: empty,
    execute: () => new Promise((resolve) => setTimeout(() => { bomb(); resolve(1); }, 0)) }),
  oomInJob: createTool({ description: "OOM in a promise job", inputSchema: empty,
    execute: () => new Promise((resolve) => Promise.resolve().then(() => { bomb(); resolve(1); })) }),
  oomCaught: createTool({ description: "OOM caught, then a result", inputSchema: empty,
    execute: () => { try { bomb(); } catch (e) { return "recovered"; } } }),
  typedArrays: createTool({ description: "large typed arrays, each freed", inputSchema: empty,
    execute: () => {
      let n = 0;
      for (let i = 0; i < 3; i++) n += new Uint8Array(40 * 1024 * 1024).length;
      return n;
    } }),
  small: createTool({ description: "a small call", inputSchema: empty, execute: () => "fine" }),
};
var limits = createAgent({ name: "limits", system: "s", model: "demo", tools });
export default createLightfast({ agents: { limits } });
"""


@pytest.fixture(scope="module")
def bundle() -> TransformedBundle:
    return transform(BUNDLE)


def _call(bundle: TransformedBundle, tool: str, **limits: Any) -> api.InvokeResult:
    return api.invoke(
        bundle,
        agent="limits",
        tool=tool,
        input={},
        context={"sessionId": "s", "resourceId": "org_limits"},
        env={},
        egress=EgressPolicy(),
        limits=Limits(memory_mb=64, cpu_ms=5000, wall_ms=10_000, **limits),
        bundle_key="org_limits:v1",
    )


@pytest.mark.parametrize("tool", ["oomInTimer", "oomInJob"])
def test_an_out_of_memory_swallowed_by_bundle_code_is_memory_limit(
    bundle: TransformedBundle, tool: str
) -> None:
    result = _call(bundle, tool)
    assert result.ok is False
    assert result.error is not None and result.error["type"] == "memory_limit"
    assert result.error["detail"]["memory_mb"] == 64
    # The worker and the bundle's zygote are fine: the next call of the same key works.
    assert _call(bundle, "small").output == "fine"


def test_an_out_of_memory_the_tool_recovers_from_is_its_result(bundle: TransformedBundle) -> None:
    result = _call(bundle, "oomCaught")
    assert result.ok is True and result.output == "recovered"


def test_peak_memory_counts_typed_arrays_freed_before_the_call_ended(bundle: TransformedBundle) -> None:
    result = _call(bundle, "typedArrays")
    assert result.ok is True and result.output == 3 * 40 * MIB
    assert result.usage["peak_memory_bytes"] >= 40 * MIB
    assert result.usage["peak_memory_bytes"] <= 64 * MIB


@pytest.fixture(scope="module")
def arena_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/security/arena_probe.c built against runner.c and the runner's QuickJS objects."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    objects = sorted((NATIVE / "build").glob("qjs-*.o"))
    headers = sorted((NATIVE / "build").glob("quickjs_ng-*/upstream-quickjs"))
    if compiler is None or not objects or not headers:
        pytest.skip(
            reason="needs a C compiler and the native runner's build (make -C execution/sandbox/native)"
        )
    binary = tmp_path_factory.mktemp("arena") / "arena_probe"
    source = Path(__file__).with_name("arena_probe.c")
    argv = [
        compiler,
        "-O1",
        "-std=gnu11",
        "-w",
        f"-I{NATIVE}",
        f"-I{headers[-1]}",
        "-o",
        str(binary),
        str(source),
    ]
    subprocess.run([*argv, *map(str, objects), "-lm"], check=True)  # noqa: S603
    return binary


def test_arena_size_arithmetic_cannot_wrap(arena_probe: Path) -> None:
    done = subprocess.run([str(arena_probe)], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    lines = done.stdout.splitlines()
    assert not [line for line in lines if not line.startswith("ok ")], done.stdout
    assert "ok realloc_wrap_refused" in lines and "ok realloc_top_wrap_refused" in lines
    assert "ok realloc_grows" in lines and "ok realloc_top_grows" in lines
    assert done.returncode == 0


pytestmark = pytest.mark.skipif(
    runner_from_env() != "native" or not BINARY.exists(),
    reason="native runner findings (LIGHTFAST_SANDBOX_RUNNER=python runs the Python runner)",
)
