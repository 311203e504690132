"""The embedded launcher: starts the whole stack, reports healthy, stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.services import PROJECT_ROOT, free_port


def processes_with_env(key: str, value: str) -> list[int]:
    """Pids of processes whose environment holds key=value (we run as root, so we can read them all)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> list[str]:
    """A process's argv (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.timeout(180)
def test_launcher_runs_healthy_and_stops_on_sigint(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(LIGHTFAST_DATA_DIR=str(data_dir), PORT=str(port), LIGHTFAST_WORKER_PROCESSES="2")
    launcher = subprocess.Popen(
        [sys.executable, "manage.py", "lightfast", "up"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        health: dict = {}
        while time.monotonic() < deadline:
            assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
            try:
                status, health = get_json(f"http://127.0.0.1:{port}/healthz")
            except OSError:  # refused, reset, or timed out while the web processes start
                time.sleep(0.5)
                continue
            if status == 200:
                break
            time.sleep(0.5)
        assert health.get("status") == "healthy", health
        assert health["checks"]["database"]["vendor"] == "sqlite"
        assert (data_dir / "redis.sock").exists()
        stack = processes_with_env("LIGHTFAST_DATA_DIR", str(data_dir))
        assert stack, "the stack's processes were not found"
        # One Celery worker per LIGHTFAST_WORKER_PROCESSES, each with its own hostname (the first
        # also runs beat, in a child process with the same command line).
        hostnames = sorted(
            {
                argv[argv.index("--hostname") + 1].split("@")[0]
                for argv in map(cmdline, stack)
                if "celery" in argv and "worker" in argv and "--hostname" in argv
            }
        )
        assert hostnames == ["embedded-1", "embedded-2"], hostnames
    finally:
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, output
    assert "Stopped all processes" in output
    assert "lf_live_" in output, "the demo API key is printed on first start"
    assert not (data_dir / "redis.sock").exists()
    leftovers = processes_with_env("LIGHTFAST_DATA_DIR", str(data_dir))
    assert leftovers == [], f"processes left running: {leftovers}"


def test_restart_delays_grow_while_a_child_keeps_dying_soon_after_starting() -> None:
    from lightfast_cloud.launcher import restart_delay

    assert [restart_delay(deaths) for deaths in range(1, 9)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_a_child_that_exits_is_started_again_and_only_ctrl_c_stops_the_stack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from lightfast_cloud.launcher import Launcher

    launcher = Launcher(
        data_dir=tmp_path, host="127.0.0.1", port=free_port(), worker_processes=1, worker_threads=1
    )
    starts = tmp_path / "starts"
    launcher.spawn(
        "flaky", [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('.'); raise SystemExit(3)"]
    )
    result: list[int] = []
    supervisor = threading.Thread(target=lambda: result.append(launcher.supervise()))
    with caplog.at_level("WARNING", logger="lightfast_cloud.launcher"):
        supervisor.start()
        deadline = time.monotonic() + 20
        while (not starts.exists() or len(starts.read_text()) < 3) and time.monotonic() < deadline:
            time.sleep(0.1)
        launcher.stopping.set()  # what Ctrl-C does
        supervisor.join(10)
    launcher.stop()
    assert len(starts.read_text()) >= 3
    assert result == [0]
    assert "flaky exited with status 3; starting it again in 0 s" in caplog.text
    assert "flaky exited with status 3; starting it again in 1 s" in caplog.text


def test_web_processes_get_one_socket_each_and_the_kernel_spreads_connections_over_them() -> None:
    import socket

    from lightfast_cloud.launcher import web_listen_sockets

    listeners = web_listen_sockets("127.0.0.1", 0, 2)
    clients: list[socket.socket] = []
    try:
        ports = {listener.getsockname()[1] for listener in listeners}
        assert len(ports) == 1, "every socket of the group listens on the one port"
        port = ports.pop()
        # A burst of connections, as keep-alive clients open them at once, before anyone accepts.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
        accepted = []
        for listener in listeners:
            listener.setblocking(False)
            count = 0
            while True:
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    break
                connection.close()
                count += 1
            accepted.append(count)
        # Each connection went to exactly one socket, and both got a share (by a hash of the
        # addresses: all 64 on one socket has a probability of 2**-63).
        assert sum(accepted) == 64
        assert min(accepted) >= 8, accepted
    finally:
        for sock in [*clients, *listeners]:
            sock.close()
