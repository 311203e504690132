"""End-to-end load through the real HTTP and websocket endpoints of the launcher's stack.

Prints one JSON object per line. Run from the project root:

    .venv/bin/python benchmarks/load.py                          # embedded stack (SQLite, private redis)
    .venv/bin/python benchmarks/load.py --servers uvicorn,daphne \
        --then-postgres postgres://postgres@127.0.0.1:5432/lf_load redis://127.0.0.1:6379/8
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python benchmarks/load.py --fresh-database
    .venv/bin/python benchmarks/load.py --url http://host:8000 --key lf_live_...   # a running deployment

Without `--url` it starts `manage.py lightfast up` itself (a scratch data directory in /tmp; the
database and redis of DATABASE_URL / REDIS_URL when set), once per server named in `--servers`
(LIGHTFAST_WEB_SERVER), so the servers are compared under the same load in the same run, and with
`--then-postgres` the first server once more on PostgreSQL + Redis. It
raises the demo organization's limits (`manage.py org set-limits`) and measures, with the demo
bundle's `assistant` agent, the offline demo model and one tool call (`calculator`):

* `request_cost`: web-process CPU per request of a few kinds, two at a time (what a request costs);
* `rest_runs`: runs started with `POST /api/v1/runs` by `--concurrency` clients, until all are terminal;
* `sse_chats`: AI SDK chats through `POST /api/v1/chat/demo/assistant`, each read to `data: [DONE]`
  (first byte = the response head, first event = the first `data:` line);
* `websocket_burst`: `--ws-clients` websockets opened at once, each then streaming one chat; every
  run's delivered seqs are compared with its stored events (lost / duplicated), and the web
  processes' memory is read before and after the connections opened;
* `mixed_at_rate_limit`: uploads, runs and reads sent open-loop at `--mixed-factor` times the
  organization's API rate; 429s are counted apart from errors;
* `big_body`: an unauthenticated 300 MiB upload (declared length, then chunked) while `/healthz`
  is polled: the web processes' memory and the slowest health answer.

CPU: `cpu_ms_per_run` splits each phase's CPU by process group (client = this process, web,
worker, sandbox, redis, and `db_server` = every PostgreSQL server process when DATABASE_URL names
this machine; an external redis on this machine is the `redis` group) when the stack is local.
The client shares the machine: its CPU is part of every figure. The machine is shared and small:
repeat, and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = ROOT / "agents" / "demo" / "demo-bundle.mjs"
TOOL_MESSAGE = 'Please compute: calculator {"expression": "(2 + 3) * sqrt(16) / 4"}'
AGENT = "demo/assistant"
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
WEB_NAMES = ("lightfast_cloud.web_process", "uvicorn", "daphne", "granian", "hypercorn")


def emit(**figure: Any) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(figure), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds, rounded."""
    return {
        "p50": round(percentile(values, 0.5), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1) if values else 0.0,
    }


# --- the processes of a local stack ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
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


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu_s(pid: int) -> float:
    """utime+stime of a process and the children it reaped."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except OSError:
        return 0


def stack_groups(launcher_pid: int) -> dict[str, list[int]]:
    """The launcher's descendants by group: web, worker (celery), sandbox (the workers' children), redis."""
    groups: dict[str, list[int]] = {"web": [], "worker": [], "sandbox": [], "redis": []}
    stack: list[tuple[int, str | None]] = [(child, None) for child in _children(launcher_pid)]
    while stack:
        pid, parent_group = stack.pop()
        command = _cmdline(pid)
        if parent_group is None:
            if "redis" in command:
                group = "redis"
            elif "celery" in command:
                group = "worker"
            elif any(name in command for name in WEB_NAMES):
                group = "web"
            else:
                group = "other"
        elif parent_group in ("worker", "sandbox"):
            group = "worker" if "celery" in command else "sandbox"
        else:
            group = parent_group
        groups.setdefault(group, []).append(pid)
        stack.extend((child, group) for child in _children(pid))
    return groups


def _server_pids(name: str, port: int | None) -> list[int]:
    """Processes named `name` (all of them; with `port`, those whose command line names that port)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != name:
                    continue
        except OSError:
            continue
        if port is None or f":{port}" in _cmdline(int(entry)):
            pids.append(int(entry))
    return pids


def local_servers(env: dict[str, str]) -> dict[str, tuple[str, int | None]]:
    """The stack's database and redis servers when they run on this machine but outside the launcher.

    group -> (process name, port): PostgreSQL's server processes are the `db_server` group (every one
    of them: the benchmark's database is the only busy one), an external redis-server the `redis` group.
    """
    servers: dict[str, tuple[str, int | None]] = {}
    local = (None, "127.0.0.1", "localhost")
    database = urlsplit(env.get("DATABASE_URL", ""))
    if database.scheme in ("postgres", "postgresql") and database.hostname in local:
        servers["db_server"] = ("postgres", None)
    redis_url = urlsplit(env.get("REDIS_URL", ""))
    if redis_url.scheme == "redis" and redis_url.hostname in local[1:]:
        servers["redis"] = ("redis-server", redis_url.port or 6379)
    return servers


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of this client, of each group of the local stack and of its local servers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snapshot = {"client": usage.ru_utime + usage.ru_stime}
    if stack.pid is not None:
        for group, pids in stack_groups(stack.pid).items():
            snapshot[group] = sum(_cpu_s(pid) for pid in pids)
        for group, (name, port) in local_servers(stack.env).items():
            snapshot[group] = snapshot.get(group, 0.0) + sum(_cpu_s(pid) for pid in _server_pids(name, port))
    return snapshot


def cpu_ms_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU milliseconds per unit of each group between two snapshots, and their sum.

    A process that exited between the snapshots is missing from `after` and is left out.
    """
    per = {
        group: round(max(0.0, after[group] - before.get(group, 0.0)) * 1000 / max(1, count), 2)
        for group in after
        if group != "other"
    }
    per["all"] = round(sum(per.values()), 2)
    return per


def web_rss_bytes(launcher_pid: int | None) -> int:
    """Resident memory of the web processes together (0 when the stack is not local)."""
    if launcher_pid is None:
        return 0
    return sum(_rss_bytes(pid) for pid in stack_groups(launcher_pid)["web"])


# --- the stack ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_database_and_redis(env: dict[str, str]) -> None:
    """Drop and create DATABASE_URL's database and flush REDIS_URL's db (only with --fresh-database)."""
    database_url = env.get("DATABASE_URL", "")
    if database_url.startswith(("postgres://", "postgresql://")):
        import psycopg

        parts = urlsplit(database_url)
        name = parts.path.lstrip("/")
        admin_url = parts._replace(path="/postgres").geturl()
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
    if env.get("REDIS_URL"):
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).flushdb()


@dataclass
class Stack:
    """A launcher started by this benchmark (or a remote deployment when `process` is None)."""

    url: str
    key: str
    process: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    server: str = "remote"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    def manage(self, *args: str) -> str:
        """Run a management command against this stack's database and redis."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_stack(
    server: str, web_processes: int | None, fresh_database: bool, extra_env: dict[str, str] | None = None
) -> Stack:
    """`manage.py lightfast up` on a free port with a scratch data directory; waits for the demo key."""
    port = _free_port()
    env = dict(os.environ)
    env.update(extra_env or {})
    env.update(
        LIGHTFAST_DATA_DIR=tempfile.mkdtemp(prefix="lf-bench-load-"),
        PORT=str(port),
        LIGHTFAST_WEB_SERVER=server,
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
    )
    if web_processes:
        env["LIGHTFAST_WEB_PROCESSES"] = str(web_processes)
    if fresh_database:
        _fresh_database_and_redis(env)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "lightfast", "up"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    key = ""
    assert process.stdout is not None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("lf_live_"):
            key = line
        if "is running at" in line:
            break
    else:
        raise RuntimeError(f"the launcher exited with {process.wait()}")
    # Keep reading its output so the pipe never fills (errors of the stack go to our stderr).
    import threading

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "Traceback" in line or " ERROR " in line or "CRITICAL" in line:
                print(f"stack: {line.rstrip()}", file=sys.stderr)

    threading.Thread(target=drain, daemon=True).start()
    return Stack(url=f"http://127.0.0.1:{port}", key=key, process=process, env=env, server=server)


def raise_limits(stack: Stack, api_rate: str = "1000000/m") -> None:
    """Plan limits far above the load, except `api_rate` (the mixed load sets it to its boundary)."""
    stack.manage(
        "org",
        "set-limits",
        "demo",
        "--api-rate",
        api_rate,
        "--concurrent-runs",
        "1000000",
        "--runs-per-month",
        "1000000000",
        "--model-tokens-per-month",
        "100000000000",
        "--sandbox-cpu-ms-per-month",
        "100000000000",
        "--bundle-storage-bytes",
        str(100 * 1024**3),
    )


# --- clients -----------------------------------------------------------------------------------------


def headers(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.key}"}


async def wait_healthy(session: aiohttp.ClientSession, stack: Stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{stack.url}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("the stack did not become healthy")


async def wait_demo_ready(session: aiohttp.ClientSession, stack: Stack) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        async with session.get(
            f"{stack.url}/api/v1/bundles/demo/versions/1?wait=5", headers=headers(stack)
        ) as r:
            body = await r.json()
            if body.get("status") == "ready":
                return
            if body.get("status") not in (None, "validating"):
                raise RuntimeError(f"demo bundle: {body}")
        await asyncio.sleep(0.2)
    raise RuntimeError("the demo bundle did not become ready")


async def run_counts(session: aiohttp.ClientSession, stack: Stack) -> dict[str, int]:
    """How many runs of the organization are in each status (one request per status)."""
    counts = {}
    for status in ("queued", "running", *TERMINAL):
        async with session.get(
            f"{stack.url}/api/v1/runs?status={status}&limit=1", headers=headers(stack)
        ) as response:
            counts[status] = int((await response.json())["count"])
    return counts


async def wait_all_terminal(session: aiohttp.ClientSession, stack: Stack, timeout: float) -> float:
    """Poll until no run is queued or running; returns when that was first seen (perf_counter)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = 0
        for status in ("queued", "running"):
            async with session.get(
                f"{stack.url}/api/v1/runs?status={status}&limit=1", headers=headers(stack)
            ) as response:
                if response.status != 200:  # e.g. 429 while the organization's rate is low
                    busy += 1
                    continue
                busy += int((await response.json())["count"])
        if busy == 0:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise RuntimeError("runs did not all end in time")


async def pool(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Run job(0..count-1) with at most `concurrency` at once."""
    numbers = iter(range(count))

    async def lane() -> None:
        for number in numbers:
            await job(number)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


def connector(limit: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, force_close=False, enable_cleanup_closed=True)


# --- phases --------------------------------------------------------------------------------------------


async def bench_rest_runs(stack: Stack, label: dict[str, Any], runs: int, concurrency: int) -> None:
    """`runs` runs through POST /api/v1/runs by `concurrency` clients, then until all are terminal."""
    async with aiohttp.ClientSession(connector=connector(concurrency + 4)) as session:
        before_counts = await run_counts(session, stack)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        body = {"agent": AGENT, "input": TOOL_MESSAGE}

        async def one(_: int) -> None:
            started = time.perf_counter()
            async with session.post(f"{stack.url}/api/v1/runs", json=body, headers=headers(stack)) as r:
                await r.read()
                statuses[r.status] += 1
            latencies.append((time.perf_counter() - started) * 1000)

        cpu_before = cpu_snapshot(stack)
        started = time.perf_counter()
        await pool(runs, concurrency, one)
        submitted = time.perf_counter()
        finished = await wait_all_terminal(session, stack, 600)
        cpu_after = cpu_snapshot(stack)
        after_counts = await run_counts(session, stack)
    ended = {status: after_counts[status] - before_counts[status] for status in TERMINAL}
    emit(
        figure="rest_runs",
        **label,
        runs=runs,
        concurrency=concurrency,
        http_statuses={str(k): v for k, v in sorted(statuses.items())},
        runs_per_s=round(runs / (finished - started), 1),
        submit_per_s=round(runs / (submitted - started), 1),
        post_latency_ms=summary(latencies),
        ended=ended,
        target_runs_per_s=200,
    )
    emit(figure="cpu_ms_per_run", phase="rest_runs", **label, **cpu_ms_per(cpu_before, cpu_after, runs))


def _sse_events(text: str) -> list[tuple[str, dict[str, Any] | str]]:
    """(id, data) of every SSE event in `text`; data parsed when JSON."""
    events: list[tuple[str, dict[str, Any] | str]] = []
    for block in text.split("\n\n"):
        event_id, data = "", None
        for line in block.split("\n"):
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            events.append((event_id, data if data == "[DONE]" else json.loads(data)))
    return events


async def bench_sse(stack: Stack, label: dict[str, Any], chats: int, concurrency: int) -> None:
    """AI SDK chats through the SSE endpoint, `concurrency` at once, each read to `[DONE]`."""
    head_ms: list[float] = []
    first_ms: list[float] = []
    total_ms: list[float] = []
    problems: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    url = f"{stack.url}/api/v1/chat/{AGENT}"
    async with aiohttp.ClientSession(connector=connector(concurrency + 4)) as session:

        async def one(number: int) -> None:
            body = {
                "id": uuid.uuid4().hex,
                "messages": [
                    {"id": f"m{number}", "role": "user", "parts": [{"type": "text", "text": TOOL_MESSAGE}]}
                ],
                "trigger": "submit-message",
            }
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers(stack)) as response:
                head_ms.append((time.perf_counter() - started) * 1000)
                statuses[response.status] += 1
                chunks: list[bytes] = []
                first = None
                async for chunk in response.content.iter_any():
                    if first is None and b"data:" in chunk:
                        first = time.perf_counter()
                    chunks.append(chunk)
            done = time.perf_counter()
            if first is not None:
                first_ms.append((first - started) * 1000)
            total_ms.append((done - started) * 1000)
            events = _sse_events(b"".join(chunks).decode())
            seqs = [int(event_id.rsplit(":", 1)[1]) for event_id, _ in events if event_id]
            kinds = [data.get("type") for _, data in events if isinstance(data, dict)]
            if not events or events[-1][1] != "[DONE]":
                problems["no_done"] += 1
            if len(seqs) != len(set(seqs)):
                problems["duplicated"] += 1
            if seqs != sorted(seqs):
                problems["out_of_order"] += 1
            if "tool-output-available" not in kinds:
                problems["no_tool_output"] += 1
            status = [
                data for _, data in events if isinstance(data, dict) and data.get("type") == "data-status"
            ]
            if not status or status[-1]["data"]["status"] != "succeeded":
                problems["not_succeeded"] += 1

        # Warm-up: each web process's connections and the sandbox zygote.
        await pool(8, 4, one)
        for collected in (head_ms, first_ms, total_ms):
            collected.clear()
        problems.clear()
        statuses.clear()
        cpu_before = cpu_snapshot(stack)
        started = time.perf_counter()
        await pool(chats, concurrency, one)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_snapshot(stack)
    emit(
        figure="sse_chats",
        **label,
        chats=chats,
        concurrency=concurrency,
        http_statuses={str(k): v for k, v in sorted(statuses.items())},
        runs_per_s=round(chats / elapsed, 1),
        head_ms=summary(head_ms),
        first_event_ms=summary(first_ms),
        complete_ms=summary(total_ms),
        problems=dict(problems),
        target_runs_per_s=200,
        target_first_byte_ms={"p50": 20, "p99": 100},
    )
    emit(figure="cpu_ms_per_run", phase="sse_chats", **label, **cpu_ms_per(cpu_before, cpu_after, chats))


async def _ws_connect(url: str, protocols: list[str], timeout: float) -> Any:
    from websockets.asyncio.client import connect

    return await connect(
        url,
        subprotocols=protocols,  # type: ignore[arg-type]
        open_timeout=timeout,
        close_timeout=5,
        compression=None,
        max_queue=None,
        proxy=None,
        ping_interval=None,
    )


async def bench_ws_burst(stack: Stack, label: dict[str, Any], clients: int, open_timeout: float) -> None:
    """`clients` websockets opened at once, then each streams one chat; lost/duplicated events checked."""
    from websockets.exceptions import WebSocketException

    url = f"{stack.ws_url}/ws/v1/chat/{AGENT}/"
    protocols = ["lightfast.v1", f"lightfast.key.{stack.key}"]
    rss_before = web_rss_bytes(stack.pid)
    connect_ms: list[float] = []
    failures: Counter[str] = Counter()
    cpu_before = cpu_snapshot(stack)

    async def open_one() -> Any:
        started = time.perf_counter()
        try:
            ws = await _ws_connect(url, protocols, open_timeout)
        except (OSError, TimeoutError, WebSocketException) as exc:
            failures[type(exc).__name__] += 1
            return None
        connect_ms.append((time.perf_counter() - started) * 1000)
        return ws

    started = time.perf_counter()
    sockets = await asyncio.gather(*(open_one() for _ in range(clients)))
    connected_s = time.perf_counter() - started
    open_sockets = [ws for ws in sockets if ws is not None]
    await asyncio.sleep(1.0)  # let the servers settle their per-connection state
    rss_connected = web_rss_bytes(stack.pid)
    cpu_connected = cpu_snapshot(stack)

    first_ms: list[float] = []
    total_ms: list[float] = []
    received: dict[str, list[int]] = {}
    stream_failures: Counter[str] = Counter()

    async def chat(ws: Any) -> None:
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "text": TOOL_MESSAGE}))
        run_id = None
        first = None
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 300))
                if frame.get("type") == "run-accepted":
                    run_id = frame["run"]
                    received[run_id] = []
                    continue
                if "seq" not in frame:
                    if frame.get("type") == "error":
                        stream_failures[frame["error"]["type"]] += 1
                        return
                    continue
                if first is None:
                    first = time.perf_counter()
                received[frame["run"]].append(frame["seq"])
                if frame.get("type") == "data-status" and frame["data"]["status"] in TERMINAL:
                    break
        except (TimeoutError, WebSocketException) as exc:
            stream_failures[type(exc).__name__] += 1
            return
        done = time.perf_counter()
        if first is not None:
            first_ms.append((first - started) * 1000)
        total_ms.append((done - started) * 1000)

    chat_started = time.perf_counter()
    await asyncio.gather(*(chat(ws) for ws in open_sockets))
    chats_s = time.perf_counter() - chat_started
    cpu_after = cpu_snapshot(stack)
    rss_streamed = web_rss_bytes(stack.pid)
    await asyncio.gather(*(ws.close() for ws in open_sockets), return_exceptions=True)

    # Every run's delivered seqs against its stored public events.
    lost = duplicated = checked = 0
    async with aiohttp.ClientSession(connector=connector(16)) as session:

        async def check(run_id: str) -> None:
            nonlocal lost, duplicated, checked
            async with session.get(f"{stack.url}/api/v1/runs/{run_id}/events", headers=headers(stack)) as r:
                stored = [e["seq"] for e in (await r.json())["events"] if not e["chunk"].get("private")]
            got = received[run_id]
            duplicated += len(got) - len(set(got))
            lost += len(set(stored) - set(got))
            checked += 1

        run_ids = list(received)
        await pool(len(run_ids), 16, lambda index: check(run_ids[index]))
    connected = len(open_sockets)
    emit(
        figure="websocket_burst",
        **label,
        clients=clients,
        connected=connected,
        failed_to_connect=dict(failures),
        connect_all_s=round(connected_s, 2),
        connect_ms=summary(connect_ms),
        chats_streamed=len(total_ms),
        stream_failures=dict(stream_failures),
        chats_per_s=round(len(total_ms) / chats_s, 1) if chats_s else 0,
        first_event_ms=summary(first_ms),
        complete_ms=summary(total_ms),
        runs_checked=checked,
        events_lost=lost,
        events_duplicated=duplicated,
        web_rss_mb={
            "before": round(rss_before / 2**20, 1),
            "connected": round(rss_connected / 2**20, 1),
            "after_streaming": round(rss_streamed / 2**20, 1),
        },
        web_kib_per_connection=round((rss_connected - rss_before) / 1024 / max(1, connected), 1),
        target={"connected": clients, "events_lost": 0, "events_duplicated": 0},
    )
    emit(
        figure="cpu_ms_per_connection",
        phase="websocket_connect",
        **label,
        **cpu_ms_per(cpu_before, cpu_connected, max(1, connected)),
    )
    emit(
        figure="cpu_ms_per_run",
        phase="websocket_chats",
        **label,
        **cpu_ms_per(cpu_connected, cpu_after, max(1, len(total_ms))),
    )


def _upload_form(number: int, source: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("slug", f"mixed-{number % 20}")
    # A different comment each time: a new version to store and introspect, as a real deploy.
    form.add_field(
        "file",
        source + f"\n// upload {number} {uuid.uuid4().hex}\n".encode(),
        filename="bundle.mjs",
        content_type="application/javascript",
    )
    return form


async def bench_mixed(
    stack: Stack, label: dict[str, Any], rate_per_s: int, factor: float, seconds: float
) -> None:
    """Uploads, runs and reads sent open-loop at `factor` x the organization's API rate."""
    source = DEMO_BUNDLE.read_bytes()
    stack.manage("org", "set-limits", "demo", "--api-rate", f"{rate_per_s}/s")
    outcomes: dict[str, Counter[str]] = {}
    latencies: list[float] = []
    run_ids: list[str] = []
    async with aiohttp.ClientSession(connector=connector(256)) as session:
        async with session.post(
            f"{stack.url}/api/v1/runs", json={"agent": AGENT, "input": "hello"}, headers=headers(stack)
        ) as r:
            run_ids.append((await r.json())["id"])
        await asyncio.sleep(1.1)  # a fresh rate window

        async def request(number: int) -> None:
            kind_roll = number % 20
            started = time.perf_counter()
            if kind_roll == 0:
                kind = "upload"
                call = session.post(
                    f"{stack.url}/api/v1/bundles", data=_upload_form(number, source), headers=headers(stack)
                )
            elif kind_roll < 7:
                kind = "run"
                call = session.post(
                    f"{stack.url}/api/v1/runs",
                    json={"agent": AGENT, "input": TOOL_MESSAGE},
                    headers=headers(stack),
                )
            else:
                kind = "read"
                target = ("runs?limit=20", f"runs/{run_ids[-1]}", "bundles", f"runs/{run_ids[-1]}/events")[
                    number % 4
                ]
                call = session.get(f"{stack.url}/api/v1/{target}", headers=headers(stack))
            try:
                async with call as response:
                    body = await response.read()
                    code = response.status
            except aiohttp.ClientError as exc:
                outcomes.setdefault(kind, Counter())[type(exc).__name__] += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)
            if kind == "run" and code == 202:
                run_ids.append(json.loads(body)["id"])
            bucket = "2xx" if code < 300 else "429" if code == 429 else "5xx" if code >= 500 else str(code)
            outcomes.setdefault(kind, Counter())[bucket] += 1

        total = int(rate_per_s * factor * seconds)
        interval = 1.0 / (rate_per_s * factor)
        tasks = []
        cpu_before = cpu_snapshot(stack)
        started = time.perf_counter()
        for number in range(total):
            delay = started + number * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(request(number)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_snapshot(stack)
        raise_limits(stack)
        await wait_all_terminal(session, stack, 600)
    merged: Counter[str] = Counter()
    for counter in outcomes.values():
        merged.update(counter)
    emit(
        figure="mixed_at_rate_limit",
        **label,
        api_rate_per_s=rate_per_s,
        offered_per_s=round(total / elapsed, 1),
        seconds=round(elapsed, 1),
        requests=total,
        outcomes={kind: dict(counter) for kind, counter in sorted(outcomes.items())},
        totals=dict(merged),
        admitted_per_s=round(merged["2xx"] / elapsed, 1),
        latency_ms=summary(latencies),
        cpu_ms_per_request=cpu_ms_per(cpu_before, cpu_after, total),
        target={"5xx": 0},
    )


async def _health_poller(stack: Stack, stop: asyncio.Event) -> list[float]:
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(f"{stack.url}/healthz") as response:
                await response.read()
            times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    return times


async def _zeros(total: int, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    block = b"\0" * chunk
    sent = 0
    while sent < total:
        yield block
        sent += chunk


async def _peak_web_rss(stack: Stack, stop: asyncio.Event) -> int:
    """The web processes' largest resident memory seen until `stop` is set."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, web_rss_bytes(stack.pid))
        await asyncio.sleep(0.05)
    return peak


async def bench_big_body(stack: Stack, label: dict[str, Any], mib: int) -> None:
    """An unauthenticated `mib` MiB upload, declared and then chunked, while /healthz is polled."""
    total = mib * 1024 * 1024
    for mode in ("content-length", "chunked"):
        rss_before = web_rss_bytes(stack.pid)
        stop = asyncio.Event()
        poller = asyncio.ensure_future(_health_poller(stack, stop))
        watcher = asyncio.ensure_future(_peak_web_rss(stack, stop))
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        status: int | str
        error_type = None
        request_headers = {"Content-Type": "application/javascript"}
        if mode == "content-length":
            request_headers["Content-Length"] = str(total)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{stack.url}/api/v1/bundles?slug=big",
                    data=_zeros(total),
                    headers=request_headers,
                    timeout=aiohttp.ClientTimeout(total=120),
                ) as response:
                    body = await response.read()
                    status = response.status
                    error_type = json.loads(body).get("error", {}).get("type") if body else None
        except aiohttp.ClientError as exc:
            # The server answered and closed before the client finished sending.
            status = type(exc).__name__
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.3)
        stop.set()
        health = await poller
        peak = max(rss_before, await watcher)
        emit(
            figure="big_body",
            **label,
            mode=mode,
            body_mib=mib,
            status=status,
            error_type=error_type,
            answered_s=round(elapsed, 2),
            web_rss_mb={"before": round(rss_before / 2**20, 1), "peak": round(peak / 2**20, 1)},
            web_rss_growth_mb=round((peak - rss_before) / 2**20, 1),
            healthz_ms=summary(health),
        )


# --- main -------------------------------------------------------------------------------------------


async def _timed(call: Callable[[], Any], count: int, concurrency: int) -> list[float]:
    """Milliseconds of each of `count` requests made by `call`, `concurrency` at once."""
    latencies: list[float] = []

    async def one(_: int) -> None:
        started = time.perf_counter()
        async with call() as response:
            await response.read()
        latencies.append((time.perf_counter() - started) * 1000)

    await pool(count, concurrency, one)
    return latencies


async def bench_request_cost(stack: Stack, label: dict[str, Any], requests: int) -> None:
    """Web-process CPU per request of a few kinds, two at a time (the cost, not the capacity)."""
    url, auth = stack.url, headers(stack)
    async with aiohttp.ClientSession(connector=connector(8)) as session:
        body = {"agent": AGENT, "input": "hello"}
        async with session.post(f"{url}/api/v1/runs", json=body, headers=auth) as response:
            run_id = (await response.json())["id"]
        run_body = {"agent": AGENT, "input": TOOL_MESSAGE}
        kinds: dict[str, Callable[[], Any]] = {
            "POST /api/v1/runs": lambda: session.post(f"{url}/api/v1/runs", json=run_body, headers=auth),
            "GET /api/v1/runs/{id}": lambda: session.get(f"{url}/api/v1/runs/{run_id}", headers=auth),
            "GET /api/v1/runs/{id}/events": lambda: session.get(
                f"{url}/api/v1/runs/{run_id}/events", headers=auth
            ),
        }
        for kind, call in kinds.items():
            await _timed(call, 20, 2)  # warm-up
            before = cpu_snapshot(stack)
            latencies = await _timed(call, requests, 2)
            after = cpu_snapshot(stack)
            await wait_all_terminal(session, stack, 120)
            emit(
                figure="request_cost",
                **label,
                request=kind,
                requests=requests,
                latency_ms=summary(latencies),
                web_cpu_ms=round((after["web"] - before["web"]) * 1000 / requests, 2),
                client_cpu_ms=round((after["client"] - before["client"]) * 1000 / requests, 2),
            )


async def run_phases(stack: Stack, args: argparse.Namespace, label: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, stack)
        await wait_demo_ready(session, stack)
    phases = set(args.phases.split(","))
    if "cost" in phases:
        await bench_request_cost(stack, label, args.cost_requests)
    if "rest" in phases:
        await bench_rest_runs(stack, label, 50, 8)  # warm-up, not reported below
        await bench_rest_runs(stack, label, args.runs, args.concurrency)
    if "sse" in phases:
        await bench_sse(stack, label, args.runs, args.concurrency)
    if "ws" in phases:
        await bench_ws_burst(stack, label, args.ws_clients, args.ws_open_timeout)
    if "mixed" in phases and stack.process is not None:
        await bench_mixed(stack, label, args.mixed_rate, args.mixed_factor, args.mixed_seconds)
    if "bigbody" in phases:
        await bench_big_body(stack, label, args.big_body_mib)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running deployment (with --key) instead of starting the launcher")
    parser.add_argument("--key", help="an API key with read, write and execute scopes (with --url)")
    parser.add_argument("--servers", default="uvicorn", help="LIGHTFAST_WEB_SERVER values, comma-separated")
    parser.add_argument("--web-processes", type=int, help="LIGHTFAST_WEB_PROCESSES (default: the launcher's)")
    parser.add_argument(
        "--fresh-database", action="store_true", help="drop DATABASE_URL's db, flush REDIS_URL's"
    )
    parser.add_argument(
        "--then-postgres",
        nargs=2,
        metavar=("DATABASE_URL", "REDIS_URL"),
        help="then the first server again on PostgreSQL + Redis (a recreated database, a flushed redis db)",
    )
    parser.add_argument("--phases", default="cost,rest,sse,ws,mixed,bigbody")
    parser.add_argument("--cost-requests", type=int, default=300, help="requests of each kind in `cost`")
    parser.add_argument("--runs", type=int, default=2000, help="runs of the REST and SSE phases each")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--ws-clients", type=int, default=2000)
    parser.add_argument("--ws-open-timeout", type=float, default=60.0)
    parser.add_argument(
        "--mixed-rate", type=int, default=30, help="the API rate (per second) of the mixed load"
    )
    parser.add_argument("--mixed-factor", type=float, default=1.5, help="offered load / API rate")
    parser.add_argument("--mixed-seconds", type=float, default=20.0)
    parser.add_argument("--big-body-mib", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    database = os.environ.get("DATABASE_URL", "sqlite").split(":", 1)[0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.url:
        stack = Stack(url=args.url.rstrip("/"), key=args.key or "")
        label = {"server": "remote", "database": "remote"}
        emit(figure="setup", url=stack.url, cores=os.cpu_count(), load_avg=os.getloadavg())
        asyncio.run(run_phases(stack, args, label))
        return
    stacks: list[tuple[str, str, dict[str, str], bool]] = [
        (server, database, {}, args.fresh_database) for server in args.servers.split(",")
    ]
    if args.then_postgres:
        # The same phases once more on PostgreSQL + Redis, in the same run (a fresh database).
        database_url, redis_url = args.then_postgres
        stacks.append(
            (stacks[0][0], "postgres", {"DATABASE_URL": database_url, "REDIS_URL": redis_url}, True)
        )
    for server, database, extra_env, fresh in stacks:
        stack = start_stack(server, args.web_processes, fresh, extra_env)
        try:
            raise_limits(stack)
            groups = stack_groups(stack.pid or 0)
            label = {"server": server, "database": database}
            emit(
                figure="setup",
                **label,
                cores=os.cpu_count(),
                web_processes=len(groups["web"]),
                worker_processes=len({_cmdline(pid) for pid in groups["worker"]}),
                load_avg=[round(value, 2) for value in os.getloadavg()],
                redis="external" if "REDIS_URL" in stack.env else "embedded",
            )
            asyncio.run(run_phases(stack, args, label))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
