"""Runs benchmark: first-event latency, sustained runs per second, 1,000 concurrent slow-provider runs.

Prints one JSON object per line. Run from the project root:
`.venv/bin/python benchmarks/runs.py [--latency-runs 200] [--sustained-runs 1000] [--concurrent 1000]`.

It builds a scratch stack of its own (data directory in /tmp, SQLite unless DATABASE_URL is
set, a private redis unless REDIS_URL is set), uploads ../shared/bundles/weather.mjs, and
starts real Celery workers (`--pool threads`). "First event" is when the run's first event
notification is published to its channel-layer group (what a websocket consumer waits for),
observed with a redis pattern subscription, measured from just before `run_start`.
The slow provider is the local OpenAI-compatible stub from tests/execution/fake_openai.py.

The sustained figures run once per worker layout (`--layouts`, default: the embedded launcher's,
one process per core with LIGHTFAST_WORKER_THREADS (50) threads each, then one process per core
with 4 threads each); `cpu_ms_per_run` splits the
CPU by process group: `benchmark` (this process: `start_side`, the run_start calls, plus the
observer), `worker`, `sandbox` (the workers' descendants), `redis`, and their sum.
The machine is shared and small: run it more than once and compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEATHER = ROOT.parent / "shared" / "bundles" / "weather.mjs"
TOOL_MESSAGE = 'Weather please: getWeather {"city": "Paris"}'


def emit(**figure: Any) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(figure), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a list of numbers."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Observer:
    """Records when each run's first and terminal notifications reach redis subscribers."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.first: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.cond = threading.Condition()
        # Keep the client referenced: collecting it closes the pub/sub connection too.
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe("*__group__run.*")
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        from redis import exceptions as redis_errors

        try:
            self._listen_forever()
        except (OSError, redis_errors.ConnectionError) as exc:
            # The scratch redis stops when the benchmark ends.
            print(f"observer stopped: {exc}", file=sys.stderr)

    def _listen_forever(self) -> None:
        for message in self._pubsub.listen():
            now = time.perf_counter()
            run_hex = message["channel"].decode().rsplit("run.", 1)[1]
            with self.cond:
                self.first.setdefault(run_hex, now)
                if self._is_terminal(message["data"]):
                    self.done[run_hex] = now
                    self.cond.notify_all()

    @staticmethod
    def _is_terminal(data: bytes) -> bool:
        # Status events are small; their serialized form names the terminal status.
        return b"data-status" in data and any(
            s in data for s in (b"succeeded", b"failed", b"cancelled", b"timed_out")
        )

    def wait_done(self, run_hexes: list[str], timeout: float) -> bool:
        """Wait until every run in the list has its terminal notification."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(h in self.done for h in run_hexes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(min(remaining, 1.0))
        return True


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Threads calling run_start in the sustained figure, like concurrent requests of a web server.
START_THREADS = 8


def _children(pid: int) -> list[int]:
    """Live children of every thread of a process (each thread's forks are listed under it)."""
    children: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as handle:
                children.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return children


def _cpu_s(pid: int, *, with_reaped: bool) -> float:
    """utime+stime of a process (plus its reaped children's with `with_reaped`), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" field 3 (state) is index 0: utime=14, stime=15, cutime=16, cstime=17.
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def cpu_snapshot(worker_pids: list[int], redis_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of this process, the workers, the workers' descendants (sandbox) and redis.

    A worker's own figure excludes its reaped children; each descendant's includes the children
    it reaped (the sandbox zygote forks one child per call and reaps it), so nothing counts twice
    as long as the descendants outlive the measurement.
    """
    sandbox = 0.0
    for worker in worker_pids:
        stack = _children(worker)
        while stack:
            pid = stack.pop()
            sandbox += _cpu_s(pid, with_reaped=True)
            stack.extend(_children(pid))
    return {
        "benchmark": _cpu_s(os.getpid(), with_reaped=False),
        "worker": sum(_cpu_s(pid, with_reaped=False) for pid in worker_pids),
        "sandbox": sandbox,
        "redis": _cpu_s(redis_pid, with_reaped=True) if redis_pid else 0.0,
    }


def cpu_per_run_ms(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    """CPU milliseconds per run of each process group between two snapshots."""
    return {key: round((after[key] - before[key]) * 1000 / runs, 2) for key in before}


def start_worker(concurrency: int, extra_env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """A real Celery worker on the scratch stack; waits until it answers a ping."""
    from lightfast_cloud.celery import app as celery_app
    from lightfast_cloud.launcher import celery_worker_argv

    hostname = f"bench-{name}-{os.getpid()}@localhost"
    env = dict(os.environ)
    env.update(extra_env)
    process = subprocess.Popen(
        celery_worker_argv(threads=concurrency, hostname=hostname),
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        # stdout is this script's JSON lines: the worker's banner and logs go to stderr.
        stdout=sys.stderr,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        if celery_app.control.ping(destination=[hostname], timeout=0.5):
            return process
    raise RuntimeError("worker did not answer")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, then kill the group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def setup_stack(data_dir: Path) -> tuple[Any, Any, Any]:
    """Django on the scratch stack: migrated database, organization, ready weather version."""
    os.environ["LIGHTFAST_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")
    os.environ["LIGHTFAST_MEDIA_ROOT"] = str(data_dir / "media")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from lightfast_cloud.embedded_redis import start_embedded_redis

    redis = start_embedded_redis(settings.DATA_DIR, persistent=False) if settings.REDIS_EMBEDDED else None
    os.environ["REDIS_URL"] = settings.REDIS_URL
    call_command("migrate", verbosity=0)

    from agents.services import bundle_upload
    from organizations.models import Organization
    from organizations.services import Actor

    organization = Organization.objects.create(
        slug=f"bench-{os.getpid()}", name="Benchmark", concurrent_runs=100_000, runs_per_month=10_000_000
    )
    # Introspection runs in the worker (its `introspect` queue), so this process never starts a
    # sandbox pool of its own.
    version = bundle_upload(
        organization=organization, slug="weather", data=WEATHER.read_bytes(), actor=Actor.system("bench")
    ).version
    return organization, version, redis


def wait_ready(version: Any) -> None:
    """Wait until the worker introspected the version."""
    from django.db import connection

    started = time.monotonic()
    while version.status == "validating" and time.monotonic() - started < 120:
        # A fresh connection each time: an unfinished statement elsewhere can pin an old SQLite snapshot.
        connection.close()
        time.sleep(0.2)
        version.refresh_from_db()
    emit(figure="introspect_in_worker_s", seconds=round(time.monotonic() - started, 2))
    assert version.status == "ready", (version.status, version.error_message)


def bench_latency(
    organization: Any, version: Any, observer: Observer, runs: int, *, emit_figures: bool = True
) -> None:
    from execution.models import Run
    from execution.services import run_start

    latencies: list[float] = []
    totals: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        run = run_start(
            organization=organization, bundle_version=version, agent_key="weather", text=TOOL_MESSAGE
        )
        assert observer.wait_done([run.pk.hex], 30), "run did not finish"
        latencies.append((observer.first[run.pk.hex] - started) * 1000)
        totals.append((observer.done[run.pk.hex] - started) * 1000)
    if not emit_figures:
        return
    statuses: dict[str, int] = {}
    for status in Run.objects.filter(organization=organization).values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    emit(
        figure="first_event_latency_ms",
        model="demo",
        tool_calls=1,
        runs=runs,
        p50=round(percentile(latencies, 0.5), 2),
        p99=round(percentile(latencies, 0.99), 2),
        mean=round(statistics.mean(latencies), 2),
        target_p50=20,
    )
    emit(
        figure="run_total_ms",
        model="demo",
        tool_calls=1,
        runs=runs,
        p50=round(percentile(totals, 0.5), 2),
        p99=round(percentile(totals, 0.99), 2),
        statuses=statuses,
    )


def bench_sustained(
    organization: Any,
    version: Any,
    observer: Observer,
    runs: int,
    message: str,
    label: str,
    worker_pids: list[int],
    redis_pid: int | None,
    layout: dict[str, int],
) -> None:
    from execution.models import Run
    from execution.services import run_start

    cpu_before = cpu_snapshot(worker_pids, redis_pid)
    started = time.perf_counter()
    ids: list[str] = []
    start_cpu: list[float] = []

    def start_one(_: int) -> str:
        from django.db import close_old_connections

        cpu = time.thread_time()
        try:
            run = run_start(
                organization=organization, bundle_version=version, agent_key="weather", text=message
            )
            return run.pk.hex
        finally:
            # What Django does when a request ends: keep the thread's connection when the
            # settings say so (SQLite), give it back to the pool otherwise (PostgreSQL).
            close_old_connections()
            start_cpu.append(time.thread_time() - cpu)

    with ThreadPoolExecutor(START_THREADS) as pool:
        ids = list(pool.map(start_one, range(runs)))
    submitted = time.perf_counter()
    finished = observer.wait_done(ids, 600)
    elapsed = max(observer.done.get(h, time.perf_counter()) for h in ids) - started
    cpu_after = cpu_snapshot(worker_pids, redis_pid)
    failed = Run.objects.filter(pk__in=ids).exclude(status="succeeded").count()
    emit(
        figure="sustained_runs_per_s",
        workload=label,
        runs=runs,
        seconds=round(elapsed, 2),
        runs_per_s=round(runs / elapsed, 1),
        submit_s=round(submitted - started, 2),
        all_finished=finished,
        not_succeeded=failed,
        target=200,
        **layout,
    )
    per_run = cpu_per_run_ms(cpu_before, cpu_after, runs)
    emit(
        figure="cpu_ms_per_run",
        workload=label,
        runs=runs,
        **per_run,
        # The run_start calls alone (thread CPU), a part of `benchmark` (which also has the observer).
        start_side=round(sum(start_cpu) * 1000 / runs, 2),
        all_processes=round(sum(per_run.values()), 2),
        target_all_processes=10,
        **layout,
    )


def bench_celery_noop(tasks: int, worker_pids: list[int], redis_pid: int | None) -> None:
    """Celery's own cost: `tasks` built-in no-op tasks through the same broker, queue and worker."""
    import redis as redis_client
    from django.conf import settings

    from lightfast_cloud.celery import app as celery_app

    client = redis_client.Redis.from_url(settings.REDIS_URL)
    cpu_before = cpu_snapshot(worker_pids, redis_pid)
    started = time.perf_counter()
    with celery_app.producer_or_acquire() as producer:
        for _ in range(tasks):
            celery_app.send_task("celery.accumulate", args=(1,), queue="runs", producer=producer)
    submitted = time.perf_counter()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (client.llen("runs") or client.hlen("unacked")):
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_snapshot(worker_pids, redis_pid)
    emit(
        figure="celery_noop_tasks_per_s",
        tasks=tasks,
        seconds=round(elapsed, 2),
        tasks_per_s=round(tasks / elapsed, 1),
        submit_s=round(submitted - started, 2),
        cpu_ms_per_task=cpu_per_run_ms(cpu_before, cpu_after, tasks),
    )


def bench_queries(organization: Any, version: Any, runs: int) -> None:
    """Queries per run, web side (`run_start`) and worker side (`run_execute`, run in this process).

    Runs after the workers stopped: this process claims the runs itself, so it starts a sandbox
    pool of its own; the tasks left in the broker find their runs claimed.
    """
    from django.db import connection

    from execution.models import Run
    from execution.services import run_execute, run_start

    counts = {"start": 0, "execute": 0}
    phase = ["start"]

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts[phase[0]] += 1
        return execute(sql, params, many, context)

    ids = []
    with connection.execute_wrapper(count):
        for _ in range(runs):
            phase[0] = "start"
            run = run_start(
                organization=organization, bundle_version=version, agent_key="weather", text=TOOL_MESSAGE
            )
            ids.append(run.pk)
            phase[0] = "execute"
            run_execute(run_id=run.pk, worker="bench-queries")
    statuses = sorted(set(Run.objects.filter(pk__in=ids).values_list("status", flat=True)))
    emit(
        figure="queries_per_run",
        workload="demo+1 tool",
        runs=runs,
        web_run_start=round(counts["start"] / runs, 1),
        worker_run_execute=round(counts["execute"] / runs, 1),
        statuses=statuses,
    )


def bench_concurrent(
    organization: Any, version: Any, observer: Observer, runs: int, wait_s: float, concurrency: int
) -> None:
    """Queue `runs` slow-provider runs, then start one worker and time until all have ended."""
    from execution.models import Run
    from execution.services import run_start
    from tests.execution.fake_openai import FakeOpenAI

    def start_one(_: int) -> str:
        from django.db import close_old_connections

        try:
            run = run_start(
                organization=organization,
                bundle_version=version,
                agent_key="weather",
                text=f"slow provider #slow={wait_s}",
            )
            return run.pk.hex
        finally:
            close_old_connections()

    # Queued before the worker starts, so every run is waiting at once instead of trickling in
    # at the submit rate.
    with ThreadPoolExecutor(START_THREADS) as pool:
        ids = list(pool.map(start_one, range(runs)))
    fake = FakeOpenAI().start()
    worker = start_worker(concurrency, {"LIGHTFAST_MODEL_BASE_URL": fake.base_url}, "slow")
    started = time.perf_counter()
    try:
        finished = observer.wait_done(ids, 600)
        elapsed = max(observer.done.get(h, time.perf_counter()) for h in ids) - started
    finally:
        stop_worker(worker)
        fake.stop()
    statuses: dict[str, int] = {}
    for status in Run.objects.filter(pk__in=ids).values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    errors = Run.objects.filter(pk__in=ids).exclude(error_type="").values_list("error_type", flat=True)[:5]
    emit(
        figure="concurrent_slow_provider",
        runs=runs,
        provider_wait_s=wait_s,
        worker_threads=concurrency,
        seconds_after_worker_ready=round(elapsed, 2),
        peak_streams_open_at_provider=fake.peak_open_streams,
        all_finished=finished,
        statuses=statuses,
        sample_errors=list(errors),
    )


def parse_layouts(text: str) -> list[tuple[int, int]]:
    """`1x50,2x4` -> [(1, 50), (2, 4)]: worker processes x threads each."""
    layouts = []
    for item in text.split(","):
        processes, _, threads = item.strip().partition("x")
        layouts.append((int(processes), int(threads)))
    return layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--sustained-runs", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--noop-tasks", type=int, default=2000, help="Celery no-op tasks (its own overhead)")
    parser.add_argument("--query-runs", type=int, default=20, help="runs whose queries are counted")
    parser.add_argument("--ws-runs", type=int, default=200, help="runs timed over a real websocket")
    from lightfast_cloud.launcher import worker_processes_default, worker_threads_default

    launcher_layout = f"{worker_processes_default()}x{worker_threads_default()}"
    parser.add_argument(
        "--layouts",
        default=f"{launcher_layout},{worker_processes_default()}x4",
        help="worker layouts for the demo runs, PROCESSESxTHREADS, comma-separated: the first one serves "
        "every figure, the others repeat the sustained ones (default: the embedded launcher's, "
        f"{launcher_layout}, then one process per core with 4 threads each)",
    )
    parser.add_argument(
        "--concurrency", type=int, help="threads per worker: one layout with --worker-processes"
    )
    parser.add_argument(
        "--slow-concurrency", type=int, default=1100, help="threads of the slow-provider worker"
    )
    parser.add_argument(
        "--worker-processes", type=int, help="worker processes: one layout with --concurrency"
    )
    args = parser.parse_args()
    layouts = parse_layouts(args.layouts)
    if args.worker_processes or args.concurrency:
        layouts = [(args.worker_processes or 1, args.concurrency or 50)]

    data_dir = Path(tempfile.mkdtemp(prefix="lf-bench-runs-"))
    organization, version, redis = setup_stack(data_dir)
    from django.conf import settings

    observer = Observer(settings.REDIS_URL)
    redis_pid = redis.process.pid if redis is not None else None
    emit(
        figure="setup",
        database=settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        cores=os.cpu_count(),
        worker_pool="threads",
        worker_concurrency=layouts[0][1],
        worker_processes=layouts[0][0],
        layouts=[f"{processes}x{threads}" for processes, threads in layouts],
    )
    for index, (processes, threads) in enumerate(layouts):
        first = index == 0
        layout = {"worker_processes": processes, "worker_threads": threads}
        workers = [start_worker(threads, {}, f"demo{index}-{number}") for number in range(processes)]
        try:
            if first:
                wait_ready(version)
            # Warm the sandbox zygotes and the workers' connections before measuring.
            bench_latency(organization, version, observer, 5 * processes, emit_figures=first)
            if first and args.latency_runs:
                bench_latency(organization, version, observer, args.latency_runs)
            if first and args.ws_runs:
                from benchmarks.runs_websocket import bench_websocket

                bench_websocket(organization, version, args.ws_runs, emit)
            if args.sustained_runs:
                pids = [worker.pid for worker in workers]
                for message, label in ((TOOL_MESSAGE, "demo+1 tool"), ("hello", "demo, no tool")):
                    bench_sustained(
                        organization,
                        version,
                        observer,
                        args.sustained_runs,
                        message,
                        label,
                        pids,
                        redis_pid,
                        layout,
                    )
            if first and args.noop_tasks:
                bench_celery_noop(args.noop_tasks, [worker.pid for worker in workers], redis_pid)
        finally:
            for worker in workers:
                stop_worker(worker)
    if args.query_runs:
        bench_queries(organization, version, args.query_runs)
    if args.concurrent:
        bench_concurrent(organization, version, observer, args.concurrent, 2.0, args.slow_concurrency)
    if redis is not None:
        redis.stop()


if __name__ == "__main__":
    main()
