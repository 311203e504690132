"""Where a jailed sandbox call's time goes: the cost floor of each runner's way to a clean JS state.

Prints one JSON object per line. Run from the project root:
`.venv/bin/python benchmarks/sandbox_floor.py [--calls 300] [--threads 4] [--runner both|python|native]`.

The Python runner forks a call child from the bundle's zygote per call; the native runner runs the
call in the zygote and copies back the pages of its JS heap that the call wrote, from a snapshot
taken after the load (execution/sandbox/native/runner.c).

Figures (CPU time, so that other load on the machine inflates them less than wall time):

* ``fork_exit`` (Python runner's model): fork + `_exit` + wait of a process holding the loaded
  weather bundle (what every call pays before running any JS), with the process's private
  anonymous memory.
* ``call_child`` (Python runner's model): one call in a forked child of that process, split into
  the part a pre-forked spare takes while idle (`Engine.warm_up`) and the call itself: wall ms and
  copy-on-write (minor) page faults.
* ``pool_cpu``: CPU per call summed over the host process and every runner process under it
  (workers, zygotes, call children), and the calls/s that this CPU allows on this machine's cores;
  once per runner (python, native), each with ``zygote_anonymous_kb``: the private memory of the
  key zygote. For the native runner also the restore figures of that zygote (the `arena` test
  probe): ``snapshot_kb`` (the used arena after the load), ``snapshot_pages``, ``hot_pages`` (pages
  the calls wrote, copied back after each call), ``saved_pages`` (pages whose loaded bytes the
  snapshot had to keep: those ever written), ``faults_per_call`` (first writes to a protected
  page) and ``restore_us`` (mean time to put the heap back).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEATHER = ROOT.parent / "shared" / "bundles" / "weather.mjs"
INPUT = {"city": "Paris", "unit": "celsius"}
CONTEXT = {"sessionId": "bench", "resourceId": "bench-org"}
KEY = "bench-org:weather-1"


def emit(**figure: Any) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(figure), flush=True)


def _cpu_with_children() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _anonymous_kb() -> int:
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


class _NoFetches:
    def start_fetch(self, request: dict[str, Any]) -> int:
        raise RuntimeError("the benchmark tool makes no fetch")

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        return []


def bench_in_process(calls: int) -> None:
    """fork_exit and call_child figures, from a loaded engine in this process."""
    import gc

    from execution.sandbox.engine import Engine
    from execution.sandbox.limits import Limits
    from execution.sandbox.transform import transform

    engine = Engine()
    engine.load(transform(WEATHER.read_bytes()).script, env={})
    gc.collect()
    gc.freeze()

    started = _cpu_with_children()
    for _ in range(calls):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    emit(
        figure="fork_exit",
        anonymous_mb=round(_anonymous_kb() / 1024, 1),
        calls=calls,
        cpu_ms=round((_cpu_with_children() - started) / calls * 1000, 3),
    )

    rows: list[list[float]] = []
    for _ in range(calls):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            begin = time.perf_counter()
            engine.warm_up()
            warm = time.perf_counter()
            warm_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            result = engine.invoke(
                agent="weather",
                tool="getWeather",
                input=INPUT,
                context=CONTEXT,
                limits=Limits(),
                host=_NoFetches(),
            )
            done = time.perf_counter()
            call_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            row = [
                warm - begin,
                warm_faults - faults,
                done - warm,
                call_faults - warm_faults,
                float(result["ok"]),
            ]
            os.write(write_fd, json.dumps(row).encode())
            os._exit(0)
        os.close(write_fd)
        rows.append(json.loads(os.read(read_fd, 4096)))
        os.close(read_fd)
        os.waitpid(pid, 0)
    assert all(row[4] for row in rows)  # noqa: S101 - a failing call invalidates the figure
    emit(
        figure="call_child",
        calls=calls,
        warm_up_ms=round(statistics.median(row[0] for row in rows) * 1000, 3),
        warm_up_faults=statistics.median(row[1] for row in rows),
        invoke_ms=round(statistics.median(row[2] for row in rows) * 1000, 3),
        invoke_faults=statistics.median(row[3] for row in rows),
    )


def _tree_cpu(pids: list[int]) -> float:
    """utime+stime (own and reaped children's) of these processes and everything under them."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    seen: set[int] = set()
    while pids:
        pid = pids.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                pids += [int(child) for child in children.read().split()]
        except FileNotFoundError:
            continue  # a call child that exited between the listing and the read
        total += sum(int(value) for value in fields[11:15]) / ticks
    return total


def _zygote_anonymous_kb(worker_pids: list[int]) -> int | None:
    """Anonymous memory of the first worker child found (a key zygote: only loaded workers have one)."""
    for worker_pid in worker_pids:
        try:
            with open(f"/proc/{worker_pid}/task/{worker_pid}/children") as children:
                pids = [int(child) for child in children.read().split()]
            for pid in pids:
                with open(f"/proc/{pid}/smaps_rollup") as rollup:
                    for line in rollup:
                        if line.startswith("Anonymous:"):
                            return int(line.split()[1])
        except (FileNotFoundError, PermissionError, ValueError):
            continue  # a child that exited between the listing and the read
    return None


def bench_pool(calls: int, threads: int, runner: str) -> None:
    """pool_cpu: CPU per call through the jailed pool, host and runners together."""
    from execution.sandbox.limits import Limits
    from execution.sandbox.pool import LocalJailBackend, PoolConfig
    from execution.sandbox.transform import transform

    # test_probes: the native zygote's `arena` probe (restore figures); no effect on the calls.
    pool = LocalJailBackend(PoolConfig(runner=runner, test_probes=True))
    if pool.runner != runner:
        emit(figure="runner_unavailable", requested=runner, using=pool.runner)
        pool.shutdown()
        return
    bundle = transform(WEATHER.read_bytes())
    limits = Limits()

    def call() -> None:
        result = pool.invoke(
            key=KEY,
            script=bundle.script,
            env={},
            filename="weather.js",
            agent="weather",
            tool="getWeather",
            input=INPUT,
            context=CONTEXT,
            limits=limits,
            egress=None,
        )
        assert result["ok"], result  # noqa: S101 - a failing call invalidates the figure

    try:
        for _ in range(50):
            call()
        workers = [worker.proc.pid for worker in pool._all]
        zygote_kb = _zygote_anonymous_kb(workers)
        runners_before = _tree_cpu(list(workers))
        host = resource.getrusage(resource.RUSAGE_SELF)
        host_before = host.ru_utime + host.ru_stime
        per_thread = max(1, calls // threads)
        started = time.perf_counter()

        def loop() -> None:
            for _ in range(per_thread):
                call()

        runs = [threading.Thread(target=loop) for _ in range(threads)]
        for run in runs:
            run.start()
        for run in runs:
            run.join()
        elapsed = time.perf_counter() - started
        done = per_thread * threads
        runners_ms = (_tree_cpu(list(workers)) - runners_before) / done * 1000
        host = resource.getrusage(resource.RUSAGE_SELF)
        host_ms = (host.ru_utime + host.ru_stime - host_before) / done * 1000
        cores = os.cpu_count() or 1
        restore: dict[str, Any] = {}
        if runner == "native":
            arena = pool.probe("arena", key=KEY)
            restore = {
                "snapshot_kb": arena["snapshot_bytes"] // 1024,
                "snapshot_pages": arena["pages"],
                "hot_pages": arena["hot_pages"],
                "saved_pages": arena["saved_pages"],
                "faults_per_call": round(arena["faults"] / max(1, arena["restores"]), 2),
                "restore_us": round(arena["restore_ns"] / max(1, arena["restores"]) / 1000, 1),
            }
        emit(
            figure="pool_cpu",
            runner=runner,
            zygote_anonymous_kb=zygote_kb,
            threads=threads,
            workers=len(workers),
            calls=done,
            calls_per_s=round(done / elapsed, 1),
            runner_cpu_ms_per_call=round(runners_ms, 3),
            host_cpu_ms_per_call=round(host_ms, 3),
            cores=cores,
            cpu_bound_calls_per_s=round(cores * 1000 / (runners_ms + host_ms), 1),
            load_average=os.getloadavg()[0],
            **restore,
        )
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pool-calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2 * (os.cpu_count() or 2))
    parser.add_argument("--runner", choices=("both", "python", "native"), default="both")
    args = parser.parse_args()
    bench_in_process(args.calls)
    for runner in ("python", "native") if args.runner == "both" else (args.runner,):
        bench_pool(args.pool_calls, args.threads, runner)


if __name__ == "__main__":
    main()
