"""Sandbox benchmark: introspect time, jailed invoke latency/throughput, and vm2 NodeVM for comparison.

Prints one JSON object per line. Run from the project root:
`.venv/bin/python benchmarks/sandbox.py [--backend local] [--runner both] [--calls 2000] [--skip-vm2]`.
With the local backend, the jailed figures are measured once per runner (both by default, one pool
after the other) and carry `runner`.
vm2 is installed with npm into a scratch temp folder by this script (never into the project).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES = ROOT.parent / "shared" / "bundles"
INPUT = {"city": "Paris", "unit": "celsius"}


def emit(**figure: Any) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(figure), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a list of numbers."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def bench_jailed(args: argparse.Namespace, runner: str | None = None) -> None:
    from execution.sandbox import api
    from execution.sandbox.egress import EgressPolicy
    from execution.sandbox.limits import Limits
    from execution.sandbox.pool import shared_local_backend
    from execution.sandbox.transform import transform

    tags: dict[str, Any] = {}
    if (args.backend or "local") == "local":
        started = time.perf_counter()
        pool = shared_local_backend(workers=args.workers)
        tags = {"runner": pool.runner}
        if runner and pool.runner != runner:
            emit(figure="runner_unavailable", requested=runner, using=pool.runner)
            return
        emit(
            figure="pool_start",
            backend="local",
            workers=args.workers,
            ms=round((time.perf_counter() - started) * 1000, 1),
            **tags,
        )

    for sample in sorted(SAMPLES.glob("*.mjs")):
        bundle = transform(sample.read_bytes())
        times = []
        for _ in range(5):
            started = time.perf_counter()
            manifest = api.introspect(bundle, backend=args.backend)
            times.append((time.perf_counter() - started) * 1000)
        emit(
            figure="introspect",
            bundle=sample.name,
            backend=args.backend or "local",
            bytes=bundle.bytes,
            agents=sorted(manifest.get("agents", {})),
            median_ms=round(statistics.median(times), 2),
            min_ms=round(min(times), 2),
            **tags,
        )

    bundle = transform((SAMPLES / "weather.mjs").read_bytes())
    policy = EgressPolicy()
    limits = Limits()

    def call() -> api.InvokeResult:
        return api.invoke(
            bundle,
            agent="weather",
            tool="getWeather",
            input=INPUT,
            context={"sessionId": "bench", "resourceId": "bench-org"},
            env={},
            egress=policy,
            limits=limits,
            bundle_key="bench-org:weather-1",
            backend=args.backend,
        )

    first = call()
    if not first.ok:
        emit(figure="invoke_error", error=first.error)
        return
    for _ in range(50):
        call()
    latencies = []
    for _ in range(args.calls):
        started = time.perf_counter()
        result = call()
        latencies.append((time.perf_counter() - started) * 1000)
        assert result.ok, result.error  # noqa: S101 - a failing call invalidates the figure
    emit(
        figure="invoke_latency",
        tool="weather.getWeather",
        backend=args.backend or "local",
        isolation="jailed",
        calls=len(latencies),
        p50_ms=round(percentile(latencies, 0.5), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        output=first.output,
        **tags,
    )

    count = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds

    def loop() -> None:
        nonlocal count
        done = 0
        while time.perf_counter() < stop_at:
            call()
            done += 1
        with lock:
            count += done

    threads = [threading.Thread(target=loop) for _ in range(args.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    emit(
        figure="invoke_throughput",
        tool="weather.getWeather",
        backend=args.backend or "local",
        isolation="jailed",
        threads=args.threads,
        workers=args.workers,
        cores=os.cpu_count(),
        seconds=round(elapsed, 2),
        calls=count,
        calls_per_s=round(count / elapsed, 1),
        **tags,
    )


_SHIMS = {
    "client.js": "export function createLightfast(c) { return c; }",
    "agent.js": "export function createAgent(a) { return a; }",
    "tool.js": "export function createTool(t) { return t; }",
    "gateway.js": "export function gateway(id) { return { provider: 'gateway', modelId: id }; }",
}

_VM2_DRIVER = r"""
const { NodeVM } = require("vm2");
const fs = require("fs");
const code = fs.readFileSync(process.argv[2], "utf8");
const mode = process.argv[3];
const calls = Number(process.argv[4]);
const input = { city: "Paris", unit: "celsius" };
async function once() {
  // Fresh per call, as the earlier Node design ran tools: new NodeVM, bundle (with zod) evaluated again.
  const vm = new NodeVM({ console: "off", require: false, wrapper: "commonjs" });
  const exp = vm.run(code, "bundle.js");
  const tool = exp.default.agents.weather.tools.getWeather;
  return await tool.execute(tool.inputSchema.parse(input), { sessionId: "bench", resourceId: "bench-org" });
}
(async () => {
  const out = await once();
  for (let i = 0; i < 10; i++) await once();
  if (mode === "latency") {
    const t = [];
    for (let i = 0; i < calls; i++) {
      const s = process.hrtime.bigint();
      await once();
      t.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
    t.sort((a, b) => a - b);
    const pick = (f) => t[Math.min(t.length - 1, Math.round(f * (t.length - 1)))];
    console.log(JSON.stringify({ p50_ms: pick(0.5), p99_ms: pick(0.99), calls, output: out }));
  } else {
    const stopAt = Date.now() + calls * 1000; let n = 0;
    while (Date.now() < stopAt) { await once(); n++; }
    console.log(JSON.stringify({ calls: n }));
  }
})();
"""


def _zygote_memory(pool: Any, key: str) -> dict[str, Any]:
    """Resident and private memory of the zygotes a local pool keeps for `key` (largest one)."""
    best: dict[str, Any] = {}
    groups = [group for name, group in getattr(pool, "_zygotes", {}).items() if name.startswith(key + "|")]
    for zygote in [zygote for group in groups for zygote in group]:
        try:
            status = Path(f"/proc/{zygote.proc.pid}/status").read_text()
            rollup = Path(f"/proc/{zygote.proc.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {
            line.split(":")[0]: int(line.split()[1])
            for line in (status + rollup).splitlines()
            if line.split(":")[0] in ("VmRSS", "Pss", "Private_Dirty")
        }
        if fields.get("VmRSS", 0) > best.get("zygote_rss_kb", -1):
            best = {
                "zygote_rss_kb": fields.get("VmRSS"),
                "zygote_pss_kb": fields.get("Pss"),
                "zygote_private_dirty_kb": fields.get("Private_Dirty"),
            }
    return best


def bench_load_cost(args: argparse.Namespace, targets: list[dict[str, Any]]) -> None:
    """Per bundle: introspection time, the zygote's memory after its load, per-call p50 of a tool."""
    for target in targets:
        _load_cost_one(args, target)


def _load_cost_one(args: argparse.Namespace, target: dict[str, Any]) -> None:
    from execution.sandbox import api
    from execution.sandbox.egress import EgressPolicy
    from execution.sandbox.limits import Limits
    from execution.sandbox.pool import shared_local_backend
    from execution.sandbox.transform import transform

    local = (args.backend or "local") == "local"
    source = Path(target["path"]).read_bytes()
    started = time.perf_counter()
    bundle = transform(source)
    transform_ms = (time.perf_counter() - started) * 1000
    times = []
    manifest: dict[str, Any] = {}
    for _ in range(5):
        started = time.perf_counter()
        manifest = api.introspect(bundle, backend=args.backend)
        times.append((time.perf_counter() - started) * 1000)
    key = f"bench-load:{bundle.sha256[:16]}"
    policy = EgressPolicy()

    def call() -> api.InvokeResult:
        return api.invoke(
            bundle,
            agent=target["agent"],
            tool=target["tool"],
            input=target["input"],
            context={"sessionId": "bench", "resourceId": "bench-load"},
            env={},
            egress=policy,
            limits=Limits(),
            bundle_key=key,
            backend=args.backend,
        )

    started = time.perf_counter()
    first = call()
    first_call_ms = (time.perf_counter() - started) * 1000
    figure: dict[str, Any] = {
        "figure": "load_cost",
        "bundle": target["label"],
        "backend": args.backend or "local",
        "upload_bytes": len(source),
        "script_bytes": bundle.bytes,
        "agents": len(manifest.get("agents", {})),
        "transform_ms": round(transform_ms, 1),
        "introspect_median_ms": round(statistics.median(times), 1),
        "introspect_min_ms": round(min(times), 1),
        "first_call_ms": round(first_call_ms, 1),
        "tool": f"{target['agent']}.{target['tool']}",
    }
    if not first.ok:
        emit(**figure, error=first.error)
        return
    for _ in range(20):
        call()
    if local:
        time.sleep(0.1)  # a zygote puts its heap back just after it answers
        figure.update(_zygote_memory(shared_local_backend(), key))
    latencies = []
    for _ in range(max(50, args.calls // 4)):
        started = time.perf_counter()
        result = call()
        latencies.append((time.perf_counter() - started) * 1000)
        assert result.ok, result.error  # noqa: S101 - a failing call invalidates the figure
    figure.update(
        calls=len(latencies),
        p50_ms=round(percentile(latencies, 0.5), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        cpu_ms=first.usage.get("cpu_ms"),
    )
    emit(**figure)


def load_cost_targets(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The bundles `bench_load_cost` measures: the weather sample, the real-world corpus's largest
    bundle and its 1.3 MB CLI-shaped one (built by esbuild from the pinned npm packages, with
    their streams-heavy tool), and any given with --load."""
    targets: list[dict[str, Any]] = [
        {
            "label": "weather.mjs",
            "path": SAMPLES / "weather.mjs",
            "agent": "weather",
            "tool": "getWeather",
            "input": INPUT,
        }
    ]
    if not args.skip_corpus:
        from tests.realworld.corpus import benchmark_bundles

        for label, info in benchmark_bundles().items():
            targets.append({**info, "label": f"{label}:{info['name']}"})
    for spec in args.load or []:
        path, agent, tool, given = spec.split(":", 3)
        targets.append(
            {"label": Path(path).name, "path": path, "agent": agent, "tool": tool, "input": json.loads(given)}
        )
    return targets


def bench_docker_cold(args: argparse.Namespace) -> None:
    """One fresh container per call (a new organization each time), against the warm pool above."""
    from execution.sandbox.docker_backend import DockerBackend, DockerConfig
    from execution.sandbox.egress import EgressPolicy
    from execution.sandbox.limits import Limits
    from execution.sandbox.transform import transform

    bundle = transform((SAMPLES / "weather.mjs").read_bytes())
    backend = DockerBackend(DockerConfig(platform="lightfast-bench", per_organization=1, total=2))
    latencies = []
    try:
        for number in range(args.cold_calls):
            started = time.perf_counter()
            result = backend.invoke(
                key=f"cold-{number}:weather-1|{bundle.sha256}|env",
                script=bundle.script,
                env={},
                filename="bundle.js",
                agent="weather",
                tool="getWeather",
                input=INPUT,
                context={"sessionId": "bench", "resourceId": f"cold-{number}"},
                limits=Limits(),
                egress=EgressPolicy(),
            )
            latencies.append((time.perf_counter() - started) * 1000)
            assert result["ok"], result  # noqa: S101 - a failing call invalidates the figure
    finally:
        backend.shutdown()
    emit(
        figure="invoke_latency",
        tool="weather.getWeather",
        backend="docker",
        isolation="cold container per call",
        calls=len(latencies),
        p50_ms=round(percentile(latencies, 0.5), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
    )


def bench_vm2(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="lightfast-vm2-bench-"))
    try:
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(scratch),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "vm2",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        version = json.loads((scratch / "node_modules" / "vm2" / "package.json").read_text())["version"]
        for name, source in _SHIMS.items():
            (scratch / name).write_text(source)
        bundle = scratch / "weather.cjs"
        esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
        aliases = {
            "lightfast/client": "client.js",
            "lightfast/agent": "agent.js",
            "lightfast/tool": "tool.js",
            "@ai-sdk/gateway": "gateway.js",
        }
        subprocess.run(
            [
                str(esbuild),
                str(SAMPLES / "weather.mjs"),
                "--bundle",
                "--format=cjs",
                "--platform=node",
                f"--outfile={bundle}",
                *[f"--alias:{k}={scratch / v}" for k, v in aliases.items()],
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=60,
            env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
        )
        driver = scratch / "driver.js"
        driver.write_text(_VM2_DRIVER)
        env = {**os.environ, "NODE_PATH": str(scratch / "node_modules")}
        latency_calls = max(50, args.calls // 10)
        out = subprocess.run(
            ["node", str(driver), str(bundle), "latency", str(latency_calls)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        latency = json.loads(out.stdout.strip().splitlines()[-1])
        emit(
            figure="invoke_latency",
            tool="weather.getWeather",
            backend="vm2-NodeVM",
            isolation="none (in-process)",
            vm2=version,
            bundle_bytes=bundle.stat().st_size,
            **latency,
        )
        procs = [
            subprocess.Popen(
                ["node", str(driver), str(bundle), "throughput", str(args.seconds)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(os.cpu_count() or 2)
        ]
        total = 0
        for proc in procs:
            stdout, _ = proc.communicate(timeout=600)
            total += json.loads(stdout.strip().splitlines()[-1])["calls"]
        emit(
            figure="invoke_throughput",
            tool="weather.getWeather",
            backend="vm2-NodeVM",
            processes=len(procs),
            seconds=args.seconds,
            calls=total,
            calls_per_s=round(total / args.seconds, 1),
        )
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        emit(
            figure="vm2_error",
            error=f"{type(exc).__name__}: {exc}",
            stderr=getattr(exc, "stderr", None) and str(exc.stderr)[-2000:],
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default=None, help="sandbox backend (local, docker)")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls for the latency figure")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=2 * (os.cpu_count() or 2))
    parser.add_argument("--skip-vm2", action="store_true")
    parser.add_argument(
        "--runner",
        choices=("both", "python", "native"),
        default="both",
        help="local: which runner(s)",
    )
    parser.add_argument("--cold-calls", type=int, default=20, help="docker: fresh-container calls")
    parser.add_argument("--skip-corpus", action="store_true", help="no real-world corpus bundles")
    parser.add_argument(
        "--load",
        action="append",
        metavar="FILE:AGENT:TOOL:INPUT_JSON",
        help="also measure this bundle's load cost (introspection, zygote memory, a tool's p50)",
    )
    args = parser.parse_args()
    if (args.backend or "local") == "local":
        from execution.sandbox.pool import shutdown_shared_backend

        for runner in ("python", "native") if args.runner == "both" else (args.runner,):
            os.environ["LIGHTFAST_SANDBOX_RUNNER"] = runner
            bench_jailed(args, runner)
            if runner == "native":
                bench_load_cost(args, load_cost_targets(args))
            shutdown_shared_backend()
    else:
        bench_jailed(args)
        bench_load_cost(args, load_cost_targets(args))
    if args.backend == "docker":
        bench_docker_cold(args)
    if not args.skip_vm2:
        bench_vm2(args)


if __name__ == "__main__":
    main()
