"""Real service processes for tests: a Celery worker on the test database, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


class Service(Protocol):
    """A service process a test starts: its process, and a way to stop it."""

    process: subprocess.Popen[bytes]

    def stop(self) -> None: ...


# Set by pytest in the test process: no difference between two service processes.
_NOT_CONFIGURATION = ("PYTEST_CURRENT_TEST",)


def service_configuration() -> tuple[tuple[str, str], ...]:
    """What a service process started now would be given: its environment (`service_env`)."""
    return tuple(
        sorted((name, value) for name, value in service_env().items() if name not in _NOT_CONFIGURATION)
    )


@dataclass
class _Held:
    configuration: tuple[tuple[str, str], ...]
    service: Service


class SharedServices:
    """Service processes handed from one test to the next when the next would start the same one.

    A Celery worker or a web process takes 1-2 s to start; consecutive tests that ask for one with
    the same environment (`service_configuration`: the test database, the media directory, the
    model provider…) get the previous test's. A process is handed on only while it runs, when its
    test left nothing in flight (`give_back(reusable=)`), and only to the next test if that test
    asks for it: a test that does not starts with none of them running (an idle worker would
    take its queued runs).
    """

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._taken: dict[int, _Held] = {}

    def take(self, kind: str, start: Callable[[], Any]) -> Any:
        """The held `kind` process when it was started with the present configuration, else a new one."""
        configuration = service_configuration()
        held = self._held.pop(kind, None)
        if held is not None and (
            held.configuration != configuration or held.service.process.poll() is not None
        ):
            held.service.stop()
            held = None
        if held is None:
            held = _Held(configuration, start())
        self._taken[id(held.service)] = held
        return held.service

    def give_back(self, kind: str, service: Service, *, reusable: bool) -> None:
        """Hand the process on to the next test, or stop it."""
        held = self._taken.pop(id(service))
        if reusable and service.process.poll() is None:
            self._held[kind] = held
        else:
            service.stop()

    def keep_only(self, kinds: Iterable[str]) -> None:
        """Stop the held processes of other kinds (the coming test does not ask for them)."""
        wanted = set(kinds)
        for kind in [kind for kind in self._held if kind not in wanted]:
            self._held.pop(kind).service.stop()

    def close(self) -> None:
        """Stop every held process."""
        self.keep_only(())


def nothing_in_flight() -> bool:
    """No run queued or running and no version being introspected: a worker has nothing left to do."""
    from agents.models import BundleVersion, VersionStatus
    from execution.models import Run, RunStatus

    return not (
        Run.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists()
        or BundleVersion.objects.filter(status=VersionStatus.VALIDATING).exists()
    )
