"""Engine costs in-process: Engine() (runtime + zod), load() of weather.mjs, invoke(), fork+invoke+exit.

Prints one JSON line per figure. Run: .venv/bin/python benchmarks/engine.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.sandbox.engine import Engine  # noqa: E402
from execution.sandbox.limits import Limits  # noqa: E402
from execution.sandbox.transform import transform  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[2] / "shared" / "bundles" / "weather.mjs"
CALL = {
    "agent": "weather",
    "tool": "getWeather",
    "input": {"city": "Paris"},
    "context": {"sessionId": "bench-session", "resourceId": "org_bench"},
}


class NoFetchHost:
    def start_fetch(self, request: dict) -> int:
        raise RuntimeError("the benchmark tool does not fetch")

    def poll(self, timeout: float) -> list:
        time.sleep(timeout)
        return []


def emit(name: str, samples_ms: list[float], **extra: object) -> None:
    ordered = sorted(samples_ms)
    print(
        json.dumps(
            {
                "benchmark": name,
                "n": len(ordered),
                "p50_ms": round(statistics.median(ordered), 3),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
                "min_ms": round(ordered[0], 3),
                **extra,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--engines", type=int, default=20)
    args = parser.parse_args()

    started = time.perf_counter()
    bundle = transform(BUNDLE.read_bytes())
    emit("transform_weather", [(time.perf_counter() - started) * 1000])

    engine_ms, load_ms, invoke_ms = [], [], []
    for _ in range(args.engines):
        t0 = time.perf_counter()
        engine = Engine()
        t1 = time.perf_counter()
        engine.load(bundle.script, env={})
        t2 = time.perf_counter()
        result = engine.invoke(limits=Limits(), host=NoFetchHost(), **CALL)
        t3 = time.perf_counter()
        assert result["ok"], result
        engine_ms.append((t1 - t0) * 1000)
        load_ms.append((t2 - t1) * 1000)
        invoke_ms.append((t3 - t2) * 1000)
    emit("engine_init", engine_ms)
    emit("load_weather", load_ms)
    emit("invoke_getWeather_in_process", invoke_ms)

    zygote = Engine()
    zygote.load(bundle.script, env={})
    fork_ms = []
    wall_start = time.perf_counter()
    for _ in range(args.calls):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            result = zygote.invoke(limits=Limits(), host=NoFetchHost(), **CALL)
            os._exit(0 if result["ok"] else 1)
        _, status = os.waitpid(pid, 0)
        fork_ms.append((time.perf_counter() - t0) * 1000)
        assert os.WEXITSTATUS(status) == 0
    elapsed = time.perf_counter() - wall_start
    emit("fork_invoke_exit_getWeather", fork_ms, calls_per_s_one_core=round(args.calls / elapsed, 1))


if __name__ == "__main__":
    main()
