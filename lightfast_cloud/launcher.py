"""The embedded stack: private redis, migrations, demo content, web and Celery worker processes per core."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightfast_cloud.data_dir import PRIVATE_UMASK, data_dir_secure
from lightfast_cloud.embedded_redis import EmbeddedRedis, EmbeddedRedisError, start_embedded_redis
from lightfast_cloud.web_process import ASGI_APPLICATION

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
# A child that dies is started again: at once the first time, then after 1 s, 2 s, 4 s… (at most
# RESTART_MAX_DELAY_S) while it keeps dying within RESTART_RESET_AFTER_S of its start.
RESTART_FIRST_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_AFTER_S = 60.0


def restart_delay(quick_deaths: int) -> float:
    """Seconds before restarting a child that died `quick_deaths` times in a row soon after starting."""
    if quick_deaths <= 1:
        return 0.0
    return float(min(RESTART_MAX_DELAY_S, RESTART_FIRST_DELAY_S * 2 ** min(quick_deaths - 2, 16)))


@dataclass
class Child:
    """One supervised process, and how to start it again."""

    name: str
    process: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)
    # File descriptors it inherits (the web processes' shared listening socket), again on a restart.
    pass_fds: tuple[int, ...] = ()
    started_at: float = field(default_factory=time.monotonic)
    # Deaths in a row, each within RESTART_RESET_AFTER_S of its start; when the restart is due.
    quick_deaths: int = 0
    restart_at: float | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's whole process group (its sandbox workers included)."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps the process and its group."""
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            self.signal_group(signal.SIGKILL)
            self.process.wait()
        # A leftover grandchild (e.g. a sandbox worker) still holds the group id.
        self.signal_group(signal.SIGKILL)


def worker_processes_default() -> int:
    """Celery worker processes of the embedded stack: LIGHTFAST_WORKER_PROCESSES, else one per core."""
    return max(1, int(os.environ.get("LIGHTFAST_WORKER_PROCESSES") or os.cpu_count() or 1))


def worker_threads_default() -> int:
    """Threads (runs held at once) of each worker process: LIGHTFAST_WORKER_THREADS, else 50."""
    return max(1, int(os.environ.get("LIGHTFAST_WORKER_THREADS") or 50))


WEB_SERVERS = ("uvicorn", "daphne")
# A burst of connections (every client reconnecting after a restart) must not wait on SYN retransmits.
LISTEN_BACKLOG = 4096
# Seconds a websocket may take from its HTTP upgrade to `accept` (daphne's default of 5 s refuses a
# burst of connections queued behind each other's authentication).
WEBSOCKET_CONNECT_TIMEOUT_S = 60
# Seconds an application may take to finish after its client left (daphne's default of 10 s cancelled
# websocket connections still leaving their channel groups after 2,000 clients left at once: each
# cancelled cleanup left a subscription in redis).
APPLICATION_CLOSE_TIMEOUT_S = 60


def web_processes_default() -> int:
    """Web server processes of the embedded stack: LIGHTFAST_WEB_PROCESSES, else one per core."""
    return max(1, int(os.environ.get("LIGHTFAST_WEB_PROCESSES") or os.cpu_count() or 1))


def web_server_default() -> str:
    """The ASGI server of the web processes: LIGHTFAST_WEB_SERVER (uvicorn or daphne), else uvicorn."""
    server = os.environ.get("LIGHTFAST_WEB_SERVER") or "uvicorn"
    if server not in WEB_SERVERS:
        raise ValueError(f"LIGHTFAST_WEB_SERVER must be one of {', '.join(WEB_SERVERS)}, not {server!r}")
    return server


def web_listen_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address, one per web process (SO_REUSEPORT when several).

    The kernel hands each new connection to one socket of the group by a hash of its addresses, so
    connections spread evenly over the processes whatever each is doing. (With one socket shared by
    every process, whichever process woke first accepted every pending connection at once: a burst
    of 32 keep-alive clients split 25 / 7, and the busier process answered slower.) The launcher
    keeps every socket open, so connections that arrive while a web process restarts wait in its
    socket's queue for the new process. Only the same user can join the group.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    with contextlib.ExitStack() as bound:
        for _ in range(max(1, count)):
            sock = socket.socket(family, socket.SOCK_STREAM)
            bound.callback(sock.close)  # closed if a later step fails
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # Port 0: the first socket's port is where the others join it.
            sock.bind((host.strip("[]"), port))
            port = int(sock.getsockname()[1])
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(True)
        bound.pop_all()  # all bound: the caller keeps them open
    return sockets


def web_listen_socket(host: str, port: int) -> socket.socket:
    """One listening socket for web processes that share it (tests and benchmarks that start one)."""
    return web_listen_sockets(host, port, 1)[0]


_ADOPT_AS_SYSTEMD_SOCKET = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="web", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def web_server_argv(*, server: str, fd: int, family: socket.AddressFamily = socket.AF_INET) -> list[str]:
    """The command line of one web process serving the ASGI application on the inherited socket `fd`.

    Neither server is told to trust proxy headers: the client address must stay the socket's (any
    client could otherwise pick the IP its failed logins count against); the rate limits read
    X-Forwarded-For per LIGHTFAST_TRUSTED_PROXY_COUNT instead.
    """
    if server == "uvicorn":
        return [sys.executable, "-m", "lightfast_cloud.web_process", str(fd)]
    if server == "daphne":
        # Twisted adopts an inherited socket only through its systemd endpoint: the socket as fd 3,
        # LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID this very process (set before exec'ing daphne).
        domain = "INET6" if family == socket.AF_INET6 else "INET"
        return [
            sys.executable,
            "-c",
            _ADOPT_AS_SYSTEMD_SOCKET,
            str(fd),
            "-m",
            "daphne",
            "-e",
            f"systemd:domain={domain}:index=0",
            "--websocket_connect_timeout",
            str(WEBSOCKET_CONNECT_TIMEOUT_S),
            "--application-close-timeout",
            str(APPLICATION_CLOSE_TIMEOUT_S),
            ASGI_APPLICATION,
        ]
    raise ValueError(f"unknown web server {server!r}")


def celery_worker_argv(
    *,
    threads: int,
    hostname: str,
    queues: str = "runs,introspect,default",
    loglevel: str = "WARNING",
    extra: list[str] | None = None,
) -> list[str]:
    """The command line of a Celery worker of this project: the threads pool, `threads` runs at once."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "lightfast_cloud",
        "worker",
        "--queues",
        queues,
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        hostname,
        "--loglevel",
        loglevel,
        *(extra or []),
    ]


@dataclass
class RedisRestart:
    """Starting the private redis again after it died, with the children's backoff."""

    quick_deaths: int = 0
    started_at: float = field(default_factory=time.monotonic)
    retry_at: float | None = None

    def attempt(self, redis: EmbeddedRedis, data_dir: Path, now: float) -> EmbeddedRedis:
        """The running redis: a new one when it is time to start it, else the dead one (tried later)."""
        if self.retry_at is None:
            self.quick_deaths = self.quick_deaths + 1 if now - self.started_at < RESTART_RESET_AFTER_S else 1
            self.retry_at = now + restart_delay(self.quick_deaths)
            logger.error("redis exited with status %s; starting it again", redis.process.returncode)
        if now < self.retry_at:
            return redis
        try:
            # Its append-only file keeps the queued tasks; the children reconnect on their own.
            started = start_embedded_redis(data_dir)
        except EmbeddedRedisError as exc:
            self.quick_deaths += 1
            self.retry_at = now + restart_delay(self.quick_deaths)
            logger.error("could not start redis again: %s", exc)
            return redis
        self.retry_at, self.started_at = None, time.monotonic()
        logger.warning("redis started again on %s", started.socket_path)
        return started


@dataclass
class Launcher:
    """Runs the embedded stack until interrupted."""

    data_dir: Path
    host: str
    port: int
    # Defaults: LIGHTFAST_WORKER_PROCESSES (the cores) and LIGHTFAST_WORKER_THREADS (runs held by each).
    worker_processes: int = field(default_factory=worker_processes_default)
    worker_threads: int = field(default_factory=worker_threads_default)
    # Defaults: LIGHTFAST_WEB_PROCESSES (the cores) and LIGHTFAST_WEB_SERVER (uvicorn).
    web_processes: int = field(default_factory=web_processes_default)
    web_server: str = field(default_factory=web_server_default)
    listeners: list[socket.socket] = field(default_factory=list)
    redis: EmbeddedRedis | None = None
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def child_env(self) -> dict[str, str]:
        """Environment for the web processes and the workers: same data dir, same redis."""
        env = dict(os.environ)
        env["LIGHTFAST_DATA_DIR"] = str(self.data_dir)
        env["DJANGO_SETTINGS_MODULE"] = "lightfast_cloud.settings"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, args: list[str], pass_fds: tuple[int, ...] = ()) -> Child:
        """Start a child in its own session and remember it."""
        child = self._start(name, args, pass_fds)
        self.children.append(child)
        return child

    def _start(self, name: str, args: list[str], pass_fds: tuple[int, ...] = ()) -> Child:
        process = subprocess.Popen(
            args, env=self.child_env(), stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=pass_fds
        )
        return Child(name=name, process=process, argv=list(args), pass_fds=pass_fds)

    def start_services(self) -> None:
        """Start the web processes and the Celery workers."""
        # One listening socket per web process, bound here (web_listen_sockets): a web process that
        # restarts inherits its socket again and finds the connections that queued meanwhile.
        self.listeners = web_listen_sockets(self.host, self.port, self.web_processes)
        for index, listener in enumerate(self.listeners):
            fd = listener.fileno()
            self.spawn(
                f"web-{index + 1}",
                web_server_argv(server=self.web_server, fd=fd, family=listener.family),
                pass_fds=(fd,),
            )
        for index in range(self.worker_processes):
            # One worker process per core: run orchestration is Python under one GIL per process,
            # so a single process uses one core however many threads it has. Beat runs in the first.
            beat = ["--beat", "--schedule", str(self.data_dir / "celerybeat-schedule")] if index == 0 else []
            self.spawn(
                f"worker-{index + 1}",
                celery_worker_argv(
                    threads=self.worker_threads,
                    hostname=f"embedded-{index + 1}@{os.uname().nodename}",
                    loglevel="INFO",
                    extra=beat,
                ),
            )

    def supervise(self) -> int:
        """Keep every child (and the private redis) running until interrupted; return the exit status.

        A child that exits is started again with the same command line (a Celery worker's runs
        meanwhile end `worker_lost` or are retried by the reaper; its queued tasks wait in the
        broker), after a backoff while it keeps dying soon after starting. Only Ctrl-C (or
        SIGTERM) stops the stack.
        """
        redis_restart = RedisRestart()
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            if self.redis is not None and self.redis.process.poll() is not None:
                self.redis = redis_restart.attempt(self.redis, self.data_dir, now)
            for index, child in enumerate(self.children):
                if child.alive():
                    continue
                if child.restart_at is None:
                    # What the dead child started (a worker's sandbox runners) goes with it.
                    child.signal_group(signal.SIGKILL)
                    quick = now - child.started_at < RESTART_RESET_AFTER_S
                    child.quick_deaths = child.quick_deaths + 1 if quick else 1
                    child.restart_at = now + restart_delay(child.quick_deaths)
                    logger.error(
                        "%s exited with status %s; starting it again in %.0f s",
                        child.name,
                        child.process.returncode,
                        child.restart_at - now,
                    )
                if now >= child.restart_at:
                    replacement = self._start(child.name, child.argv, child.pass_fds)
                    replacement.quick_deaths = child.quick_deaths
                    self.children[index] = replacement
                    logger.warning("%s started again (pid %d)", child.name, replacement.process.pid)
        return 0

    def stop(self) -> None:
        """Stop children in reverse start order, then redis."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def run(self, prepare: Callable[[], None]) -> int:
        """Start redis, run `prepare` (migrations, demo content), then the services."""

        def on_signal(signum: int, frame: object) -> None:
            self.stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        # Inherited by redis, the web processes and the workers: what they create in the data dir is private.
        os.umask(PRIVATE_UMASK)
        data_dir_secure(self.data_dir)
        try:
            if "REDIS_URL" not in os.environ:
                self.redis = start_embedded_redis(self.data_dir)
                logger.info("private redis on %s", self.redis.socket_path)
            prepare()
            if self.stopping.is_set():
                return 0
            self.start_services()
            print(
                f"\nLightfast Cloud is running at http://{self.host}:{self.port}/  (Ctrl-C stops it)\n",
                flush=True,
            )
            return self.supervise()
        finally:
            started = time.monotonic()
            self.stop()
            print(f"Stopped all processes in {time.monotonic() - started:.1f} s.", flush=True)
