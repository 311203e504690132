"""Real service processes for tests: a Celery worker on the test database, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from lightfast_cloud.celery import app as celery_app
from lightfast_cloud.launcher import celery_worker_argv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_BUNDLES = PROJECT_ROOT.parent / "shared" / "bundles"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """DATABASE_URL of the database pytest-django created for this run."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def service_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must see the test database and redis."""
    env = dict(os.environ)
    # Switched off for the test process only while a browser test's Playwright is open (tests/browser.py);
    # the web processes and the workers keep Django's check that async code makes no blocking ORM calls.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(
        DJANGO_SETTINGS_MODULE="lightfast_cloud.settings",
        LIGHTFAST_DATA_DIR=str(settings.DATA_DIR),
        DATABASE_URL=test_database_url(),
        REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def spawn_service(argv: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """Start a service process on the test database and redis, in a session (a group) of its own."""
    return subprocess.Popen(
        argv,
        env=service_env(),
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        pass_fds=pass_fds,
    )


def wait_ready(
    process: subprocess.Popen[bytes], name: str, ready: Callable[[], bool], timeout: float
) -> bool:
    """True once `ready()` is, False when `timeout` passed first; raises if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        if ready():
            return True
    return False


def stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process's group; SIGKILL it when the process has not exited within `grace_s`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class CeleryWorker:
    """A running `celery worker` process."""

    process: subprocess.Popen[bytes]
    hostname: str

    def stop(self) -> None:
        """Warm shutdown, then kill the whole group."""
        stop_group(self.process, 20)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the worker and everything it started."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_celery_worker(queues: str = "runs,introspect,default", timeout: float = 30.0) -> CeleryWorker:
    """Start a worker and wait until it answers a ping."""
    hostname = f"test-{os.getpid()}-{time.monotonic_ns()}@localhost"
    process = spawn_service(celery_worker_argv(threads=8, hostname=hostname, queues=queues))
    worker = CeleryWorker(process=process, hostname=hostname)

    def answers() -> bool:
        return bool(celery_app.control.ping(destination=[hostname], timeout=0.2))

    if wait_ready(process, "celery worker", answers, timeout):
        return worker
    worker.stop()
    raise RuntimeError(f"celery worker did not answer within {timeout} s")
