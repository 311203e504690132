"""Each jail layer proven on its own, with probes run in a worker child under the call jail a zygote has."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from execution.sandbox.errors import SandboxError
from execution.sandbox.jail import NOBODY_UID, JailConfig, JailLayers, sandbox_status
from execution.sandbox.pool import LocalJailBackend, PoolConfig
from tests.execution.sandbox.engine_harness import native_requested

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail layers need root to be applied")


def _pool(layers: JailLayers, **extra: object) -> LocalJailBackend:
    return LocalJailBackend(PoolConfig(workers=1, test_probes=True, jail=JailConfig(layers=layers), **extra))


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's 127.0.0.1."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_no_layers_is_a_working_control(listener: int) -> None:
    pool = _pool(JailLayers.none())
    try:
        assert pool.probe("socket") == "ok"
        assert pool.probe("connect", {"host": "127.0.0.1", "port": listener}) == "ok"
        assert pool.probe("ids")["uid"] == 0
    finally:
        pool.shutdown()


def _denied(pool: LocalJailBackend, name: str, args: dict[str, object] | None = None) -> str:
    """How a probe's system call was refused: the Python runner's denylist answers EPERM, the native
    runner's allowlist kills the process (SIGSYS)."""
    try:
        return str(pool.probe(name, args))
    except SandboxError as exc:
        assert exc.code == "sandbox_crash"
        assert "SIGSYS" in exc.message
        return "SIGSYS"


def test_seccomp_alone_denies_sockets_processes_and_opens(listener: int) -> None:
    pool = _pool(JailLayers.only("seccomp"))
    refused = "SIGSYS" if pool.runner == "native" else "EPERM"
    try:
        assert pool.probe("ids")["uid"] == 0  # nothing else is on
        assert _denied(pool, "socket") == refused
        assert _denied(pool, "connect", {"host": "127.0.0.1", "port": listener}) == refused
        assert _denied(pool, "fork") == refused
        assert _denied(pool, "execve") == refused
        assert _denied(pool, "read_file", {"path": "/etc/hostname"}) == refused
        assert pool.probe("ids")["uid"] == 0  # the worker is unaffected: only the probe's child died
    finally:
        pool.shutdown()


def test_netns_alone_cannot_reach_host_listener(listener: int) -> None:
    pool = _pool(JailLayers.only("netns"))
    try:
        assert pool.probe("socket") == "ok"  # sockets exist, but the namespace has no route out
        assert pool.probe("connect", {"host": "127.0.0.1", "port": listener}) in {
            "ENETUNREACH",
            "ECONNREFUSED",
        }
    finally:
        pool.shutdown()


def test_uid_drop_alone_cannot_read_root_only_file(tmp_path: object) -> None:
    secret = "/root/.lightfast-jail-probe"
    with open(secret, "w") as handle:
        handle.write("root only")
    os.chmod(secret, 0o600)
    pool = _pool(JailLayers.only("drop_uid"))
    try:
        ids = pool.probe("ids")
        assert ids == {"uid": NOBODY_UID, "euid": NOBODY_UID, "gid": NOBODY_UID, "groups": []}
        assert pool.probe("read_file", {"path": secret}) == "EACCES"
        assert pool.probe("read_file", {"path": "/etc/hostname"}) == "ok"  # the file layer is not seccomp
    finally:
        pool.shutdown()
        os.unlink(secret)


def test_rlimits_alone() -> None:
    pool = _pool(JailLayers.only("rlimits"))
    try:
        limits = pool.probe("rlimits")
        assert limits["fsize"] == [0, 0]
        assert limits["core"] == [0, 0]
        assert limits["nofile"] == [256, 256]
        assert limits["nproc"] == [0, 0]  # a process that runs calls may not create processes
        if pool.runner == "native":
            # A bundle zygote runs call after call and RLIMIT_CPU counts its whole life: it stays the
            # jail's lifetime guard there, and the per-call CPU backstop is the profiling timer below.
            assert limits["cpu"] == [JailConfig().cpu_seconds] * 2
        else:
            assert limits["cpu"][0] <= 6  # default 5 s call budget rounded up, plus one
        assert 0 < limits["as"][0] < 4096 * 1024 * 1024
        # The default 5 s CPU limit plus jail.CPU_BACKSTOP_MS, armed when the call started (the kernel
        # keeps the timer in scheduler ticks, so it may read up to one tick more).
        assert 4.5 < pool.probe("itimer") <= 5.06 + 0.011
    finally:
        pool.shutdown()


def test_no_new_privs_alone() -> None:
    pool = _pool(JailLayers.only("no_new_privs"))
    try:
        assert pool.probe("status")["NoNewPrivs"] == "1"
        assert pool.probe("status")["Seccomp"] == "0"
    finally:
        pool.shutdown()


def test_close_fds_alone_closes_inherited_descriptors() -> None:
    pipe_r, write_fd = os.pipe()
    # A number no fd of the runner's own can have (the probe lists 0..255): a low one could be
    # reused by the runner for its own pipes and read as "inherited".
    read_fd = os.dup2(pipe_r, 250)
    os.close(pipe_r)
    try:
        leaky = _pool(JailLayers.none(), test_pass_fds=(read_fd,))
        try:
            assert read_fd in leaky.probe("fds")  # the control: it would be inherited
        finally:
            leaky.shutdown()
        closed = _pool(JailLayers.only("close_fds"), test_pass_fds=(read_fd,))
        try:
            fds = closed.probe("fds")
            assert read_fd not in fds
            assert fds[:3] == [0, 1, 2] and len(fds) <= 4  # plus, at most, the runner's own answer pipe
        finally:
            closed.shutdown()
    finally:
        os.close(read_fd)
        os.close(write_fd)


# The native runner sets TZ=UTC before its call filter (glibc's mktime re-reads TZ on every call).
RUNNER_ENV = {"TZ": "UTC"} if native_requested() else {}


def test_clear_env_alone_hides_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTFAST_JAIL_PROBE_SECRET", "s3cret")
    leaky = _pool(JailLayers.none())
    try:
        assert leaky.probe("env").get("LIGHTFAST_JAIL_PROBE_SECRET") == "s3cret"  # the control
    finally:
        leaky.shutdown()
    clean = _pool(JailLayers.only("clear_env"))
    try:
        # Nothing of the host's; only the zone the runner sets itself (bundle code runs in UTC).
        assert clean.probe("env") == RUNNER_ENV
    finally:
        clean.shutdown()


def test_all_layers_together_and_status() -> None:
    pool = _pool(JailLayers(), require_all_layers=True)
    try:
        status = pool.status()
        assert status["missing_layers"] == []
        assert set(status["layers"]) == {
            "drop_uid",
            "rlimits",
            "no_new_privs",
            "seccomp",
            "netns",
            "close_fds",
            "clear_env",
        }
        assert sandbox_status()["started"] is True
        assert pool.probe("ids")["uid"] == NOBODY_UID
        assert _denied(pool, "socket") == ("SIGSYS" if pool.runner == "native" else "EPERM")
        assert pool.probe("env") == RUNNER_ENV
        fds = pool.probe("fds")
        assert fds[:3] == [0, 1, 2] and len(fds) <= 4  # plus, at most, the runner's own answer pipe
    finally:
        pool.shutdown()


def test_disabled_layer_is_reported_and_refused_when_all_are_required() -> None:
    from execution.sandbox.jail import JailUnavailable

    with pytest.raises(JailUnavailable):
        _pool(JailLayers(netns=False), require_all_layers=True)
    pool = _pool(JailLayers(netns=False))
    try:
        assert pool.status()["missing_layers"] == ["netns"]
        assert sandbox_status()["layers"]["netns"] == "off"
    finally:
        pool.shutdown()
