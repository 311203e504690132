"""The system under fault: the embedded launcher's stack (web, a Celery worker with beat, its sandbox pool)
on the test database and redis, reached through proxies a test can take away; and a websocket client that
streams runs the way a real one does, so a test can check every event arrived once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from execution.models import TERMINAL_STATUSES, Run
from tests.execution.live_transport import key_protocols, public_seqs
from tests.faults.proxy import TcpProxy
from tests.services import PROJECT_ROOT, free_port, test_database_url


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll `predicate` until it holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def proc_children(pid: int) -> list[int]:
    """Pids whose parent is `pid`."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: the parent pid follows its closing parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def redis_target(url: str) -> tuple[tuple[str, int] | str, int]:
    """Where a REDIS_URL points (a (host, port) or a unix socket path) and its database number."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if parts.scheme == "unix":
        return parts.path, int(query.get("db", ["0"])[0])
    return (parts.hostname or "127.0.0.1", parts.port or 6379), int(parts.path.strip("/") or 0)


@dataclass
class Web:
    """A web process of the platform, on 127.0.0.1:`port`."""

    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            response = httpx.get(f"{self.http}/healthz", timeout=10)
        except httpx.HTTPError:
            return 0, {}
        return response.status_code, response.json()

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until /healthz answers 200; its body."""
        body: dict[str, Any] = {}

        def healthy() -> bool:
            nonlocal body
            status, body = self.health()
            return status == 200

        wait_until(healthy, timeout, f"/healthz healthy (last answer {body})", every=0.25)
        return body

    def start_run(self, key: str, agent: str, text: str) -> str:
        """POST /api/v1/runs; the run's id."""
        response = httpx.post(
            f"{self.http}/api/v1/runs",
            json={"agent": agent, "input": text},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])


@dataclass
class Stack(Web):
    """A running `manage.py lightfast up`; `redis` and (on PostgreSQL) `database` are its proxies."""

    launcher: subprocess.Popen[bytes] | None = None
    log: Path = Path()
    redis: TcpProxy | None = None
    database: TcpProxy | None = None
    sqlite_path: str | None = None

    def worker_pid(self) -> int | None:
        """The Celery worker main process the launcher started (None while it is being restarted)."""
        assert self.launcher is not None
        for pid in proc_children(self.launcher.pid):
            argv = proc_cmdline(pid)
            if "celery" in argv and "worker" in argv:
                return pid
        return None

    def runner_pids(self) -> list[int]:
        """The sandbox runner processes of the worker (each leads a process group with its zygotes)."""
        worker = self.worker_pid()
        if worker is None:
            return []
        return [pid for pid in proc_children(worker) if "celery" not in proc_cmdline(pid)]

    def stop(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.send_signal(signal.SIGINT)
            try:
                self.launcher.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.launcher.pid, signal.SIGKILL)
                self.launcher.wait()
        for proxy in (self.redis, self.database):
            if proxy is not None:
                proxy.stop()


def start_stack(
    *, data_dir: Path, media_root: Path, secret_key: str, redis_url: str, env: dict[str, str]
) -> Stack:
    """Start the launcher on the test database and redis (each behind a proxy where it is a TCP server)."""
    target, db = redis_target(redis_url)
    redis = TcpProxy(target).start()
    database_url = test_database_url()
    database: TcpProxy | None = None
    sqlite_path: str | None = None
    if database_url.startswith("sqlite:"):
        sqlite_path = database_url.removeprefix("sqlite:///")
        if not sqlite_path.startswith("/"):
            sqlite_path = "/" + sqlite_path
    else:
        parts = urllib.parse.urlsplit(database_url)
        database = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
        database_url = parts._replace(
            netloc=parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{database.port}")
        ).geturl()
    port = free_port()
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_URL", "PYTEST"))
    }
    child_env.update(
        DJANGO_SETTINGS_MODULE="lightfast_cloud.settings",
        PYTHONUNBUFFERED="1",
        LIGHTFAST_DATA_DIR=str(data_dir),
        LIGHTFAST_MEDIA_ROOT=str(media_root),
        SECRET_KEY=secret_key,
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://127.0.0.1:{redis.port}/{db}",
        PORT=str(port),
        **env,
    )
    log = data_dir.parent / "launcher.log"
    with log.open("wb") as output:
        launcher = subprocess.Popen(
            [sys.executable, "manage.py", "lightfast", "up", "--no-demo"],
            cwd=PROJECT_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Stack(
        launcher=launcher, port=port, log=log, redis=redis, database=database, sqlite_path=sqlite_path
    )


# The refusals a client answers by sending its frame again a little later.
RETRY_LATER = frozenset({"rate_limited", "rate_limit_unavailable", "service_unavailable"})


@dataclass
class RunStreams:
    """One websocket per agent, resuming every run it is given from seq 0, reconnecting (and resuming
    after the last seq it got) when the connection drops: a client that wants every event once."""

    web: Web
    key: str
    frames: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _agents: dict[str, list[str]] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def follow(self, agent: str, run_ids: list[str]) -> None:
        """Stream `run_ids` (runs of `agent`, `bundle/agentKey`) in a thread of their own."""
        for run_id in run_ids:
            self.frames.setdefault(run_id, [])
        thread = threading.Thread(target=self._loop, args=(agent, list(run_ids)), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _done(self, run_id: str) -> bool:
        frames = self.frames[run_id]
        return (
            bool(frames)
            and frames[-1].get("type") == "data-status"
            and (frames[-1]["data"]["status"] in TERMINAL_STATUSES)
        )

    def _loop(self, agent: str, run_ids: list[str]) -> None:
        while not self._stop.is_set() and not all(self._done(run_id) for run_id in run_ids):
            try:
                with self._connect(agent) as ws:
                    for run_id in run_ids:
                        if not self._done(run_id):
                            after = self.frames[run_id][-1]["seq"] if self.frames[run_id] else 0
                            ws.send(json.dumps({"type": "resume", "run": run_id, "after": after}))
                    while not self._stop.is_set() and not all(self._done(run_id) for run_id in run_ids):
                        try:
                            frame = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        if frame.get("type") == "error" and "seq" not in frame:  # not a run's event
                            self.errors.append(json.dumps(frame))
                            # A refused resume (rate-limit store or database away) names its run:
                            # ask again, after what arrived (nothing did from that frame).
                            run_id = frame.get("run")
                            retry = frame["error"]["type"] in RETRY_LATER
                            if retry and run_id in self.frames and not self._done(run_id):
                                time.sleep(0.5)
                                after = self.frames[run_id][-1]["seq"] if self.frames[run_id] else 0
                                ws.send(json.dumps({"type": "resume", "run": run_id, "after": after}))
                            continue
                        if frame.get("run") in self.frames and "seq" in frame:
                            self.frames[frame["run"]].append(frame)
            except (ConnectionClosed, InvalidHandshake, OSError, EOFError) as exc:
                self.errors.append(f"reconnecting after {type(exc).__name__}: {exc}")
                time.sleep(0.5)

    def _connect(self, agent: str) -> ClientConnection:
        return connect(
            f"ws://127.0.0.1:{self.web.port}/ws/v1/chat/{agent}/",
            subprotocols=key_protocols(self.key),  # type: ignore[arg-type]
            open_timeout=10,
            proxy=None,
        )

    def wait(self, timeout: float) -> None:
        """Until every run followed has streamed its terminal event."""
        try:
            wait_until(
                lambda: all(self._done(run_id) for run_id in self.frames), timeout, "every run streamed"
            )
        except AssertionError as exc:
            state = {
                run_id: (
                    Run.objects.filter(pk=run_id).values_list("status", "last_seq").first(),
                    [frame.get("seq") for frame in frames][-3:],
                )
                for run_id, frames in self.frames.items()
            }
            raise AssertionError(
                f"{exc}; runs (status, last_seq), last seqs streamed: {state}; {self.errors}"
            ) from exc

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


@dataclass
class Outcome:
    """What an experiment did to its runs, for the figures."""

    experiment: str
    runs: int = 0
    stuck: int = 0
    lost_events: int = 0
    duplicated_events: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    # Why: `run:<error type>`, `tool:<error type>` (a call that failed, the run went on), `retried`
    # (a lost worker's run run again), `task re-sent` (the reaper sent a lost task again).
    causes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


def check_runs(streams: RunStreams, outcome: Outcome) -> dict[str, Run]:
    """Every followed run ended, its stored events count 1, 2, 3… and its stream got exactly the public
    ones, once each, in order. Records the figures on `outcome`; returns the runs by id."""
    runs: dict[str, Run] = {}
    for run_id, frames in streams.frames.items():
        run = Run.objects.get(pk=run_id)
        runs[run_id] = run
        outcome.runs += 1
        outcome.count(outcome.statuses, run.status)
        if run.error_type:
            outcome.count(outcome.causes, f"run:{run.error_type}")
        for error in run.events.filter(type="tool-output-error").values_list("payload", flat=True):
            outcome.count(outcome.causes, f"tool:{str(error['errorText']).split(':')[0]}")
        if run.attempt > 1:
            outcome.count(outcome.causes, "retried")
        if run.requeue_count:
            outcome.count(outcome.causes, "task re-sent")
        if not run.is_terminal:
            outcome.stuck += 1
            continue
        stored = public_seqs(run_id)
        got = [frame["seq"] for frame in frames]
        outcome.duplicated_events += len(got) - len(set(got))
        outcome.lost_events += len(set(stored) - set(got))
        all_seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
        assert all_seqs == list(range(1, run.last_seq + 1)), (run_id, all_seqs)
        assert got == stored, (run_id, got, stored)
    assert outcome.stuck == 0, outcome
    assert outcome.lost_events == outcome.duplicated_events == 0, outcome
    return runs


def record(outcome: Outcome) -> None:
    """Append the experiment's figures as a JSON line to LIGHTFAST_FAULTS_REPORT, when it is set."""
    path = os.environ.get("LIGHTFAST_FAULTS_REPORT")
    if path:
        with open(path, "a") as report:
            report.write(json.dumps({"benchmark": "faults", **outcome.__dict__}) + "\n")
