"""Docker backend specifics against a real engine: container lockdown, labels, OOM, pools per org, orphans."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.transform import TransformedBundle, transform
from tests.execution.sandbox.conftest import docker_unavailable_reason, skip_or_fail

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT.parent / "shared" / "bundles"
LONG = Limits(cpu_ms=20_000, wall_ms=30_000)


@pytest.fixture(scope="module")
def docker_ready() -> None:
    """These tests always need the engine, whichever backend the rest of the suite uses."""
    reason = docker_unavailable_reason()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def make_backend(docker_ready: None) -> Iterator[Any]:
    """Private Docker backends (own platform label, so sweeps never touch other pools); removed after."""
    from execution.sandbox.docker_backend import DockerBackend, DockerConfig

    made: list[DockerBackend] = []

    def make(**overrides: Any) -> DockerBackend:
        options: dict[str, Any] = {"platform": f"lightfast-test-{uuid.uuid4().hex[:8]}", **overrides}
        backend = DockerBackend(DockerConfig(**options))
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.shutdown()
        backend.cleanup_orphans(everything=True)


@pytest.fixture(scope="module")
def weather() -> TransformedBundle:
    """weather.mjs, transformed once."""
    return transform((SAMPLES / "weather.mjs").read_bytes())


@pytest.fixture(scope="module")
def hostile() -> TransformedBundle:
    """The hostile tools bundle, transformed once."""
    return transform((SAMPLES / "hostile" / "tools.mjs").read_bytes())


def _call(
    backend: Any, bundle: TransformedBundle, org: str, tool: str, input: Any, **extra: Any
) -> dict[str, Any]:
    agent = "weather" if tool in {"getWeather", "convertTemperature"} else "hostile"
    options: dict[str, Any] = {
        "key": f"{org}:v1|{bundle.sha256}|env",
        "script": bundle.script,
        "env": {},
        "filename": "bundle.js",
        "agent": agent,
        "tool": tool,
        "input": input,
        "context": {"sessionId": "s", "resourceId": org},
        "limits": Limits(),
        "egress": EgressPolicy(),
    }
    options.update(extra)
    result: dict[str, Any] = backend.invoke(**options)
    return result


def _containers(backend: Any, **labels: str) -> list[dict[str, Any]]:
    filters = [f"lightfast.platform={backend.dconfig.platform}"] + [f"{k}={v}" for k, v in labels.items()]
    found: list[dict[str, Any]] = backend.client.api.containers(all=True, filters={"label": filters})
    return found


def _eventually_none(backend: Any) -> bool:
    """Whether the backend's containers are all gone from the engine within 10 s (removal is async)."""
    deadline = time.monotonic() + 10
    while _containers(backend) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _containers(backend) == []


def test_containers_are_locked_down_and_labelled(make_backend: Any, weather: TransformedBundle) -> None:
    backend = make_backend()
    assert _call(backend, weather, "org_alice", "getWeather", {"city": "Paris"})["ok"] is True
    (info,) = _containers(backend, **{"lightfast.organization": "org_alice"})
    details = backend.client.api.inspect_container(info["Id"])
    host = details["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == backend.dconfig.memory_mb * 1024 * 1024
    assert host["PidsLimit"] == backend.dconfig.pids
    assert host["NanoCpus"] == backend.dconfig.nano_cpus
    assert "size=16m" in host["Tmpfs"]["/tmp"]
    assert details["Config"]["User"] == "10001:10001"
    labels = details["Config"]["Labels"]
    assert labels["lightfast.organization"] == "org_alice"
    assert labels["lightfast.run"] == "warm-pool"
    assert labels["lightfast.owner"] == backend.owner


def _exec_python(backend: Any, code: str) -> str:
    """Run Python inside a pool container (as its user, with its restrictions) and return its output."""
    (worker,) = backend.containers()
    python = backend.client.api.inspect_container(worker.container_id)["Config"]["Entrypoint"][0]
    exec_id = backend.client.api.exec_create(worker.container_id, [python, "-c", code])
    return str(backend.client.api.exec_start(exec_id).decode())


def test_inside_a_container_no_network_no_writes_no_root(
    make_backend: Any, weather: TransformedBundle
) -> None:
    backend = make_backend()
    assert _call(backend, weather, "org_alice", "getWeather", {"city": "Paris"})["ok"] is True
    probe = """
import os, socket
def attempt(action):
    try:
        action()
    except OSError as exc:
        return type(exc).__name__ + ':' + str(exc.errno)
    return 'ok'
def connect():
    with socket.create_connection(('1.1.1.1', 80), timeout=2):
        pass
def write_root():
    open('/app/owned', 'w').write('x')
def write_tmp():
    open('/tmp/scratch', 'w').write('x')
print(os.getuid(), os.geteuid(), attempt(connect), attempt(write_root), attempt(write_tmp))
print(sorted(os.listdir('/sys/class/net')))
print([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs'))])
"""
    lines = _exec_python(backend, probe).splitlines()
    uid, euid, connect, write_root, write_tmp = lines[0].split()
    assert (uid, euid) == ("10001", "10001")
    assert connect.startswith("OSError:101") or connect.startswith("OSError:")  # ENETUNREACH: no route
    assert write_root == "OSError:30"  # EROFS
    assert write_tmp == "ok"  # the capped tmpfs is the only writable place
    assert lines[1] == "['lo']"
    assert "0000000000000000" in lines[2] and "NoNewPrivs:\\t1" in lines[2]


def test_engine_limits_still_apply_inside(make_backend: Any, hostile: TransformedBundle) -> None:
    backend = make_backend()
    limits = Limits(cpu_ms=500, wall_ms=2000, memory_mb=32)
    loop = _call(backend, hostile, "org_mallory", "infiniteLoop", {}, limits=limits)
    assert loop["ok"] is False and loop["error"]["type"] in {"cpu_limit", "timeout"}
    bomb = _call(backend, hostile, "org_mallory", "memoryBomb", {}, limits=limits)
    assert bomb["ok"] is False and bomb["error"]["type"] == "memory_limit"
    assert _call(backend, hostile, "org_mallory", "badInput", {"n": 21})["output"] == 42


def test_container_oom_kill_is_a_memory_limit_and_the_pool_recovers(
    make_backend: Any, hostile: TransformedBundle
) -> None:
    # The container's cgroup (96 MB) is far below what the engine allows the call, so
    # the kernel's OOM killer, not QuickJS, ends it.
    backend = make_backend(memory_mb=96)
    result = None
    try:
        result = _call(
            backend, hostile, "org_mallory", "memoryBomb", {}, limits=Limits(memory_mb=1024, wall_ms=15_000)
        )
    except SandboxError as exc:
        result = {"ok": False, "error": exc.to_dict()}
    assert result["ok"] is False and result["error"]["type"] == "memory_limit", result
    assert _call(backend, hostile, "org_mallory", "badInput", {"n": 21})["output"] == 42


def test_a_container_never_serves_two_organizations(make_backend: Any, weather: TransformedBundle) -> None:
    backend = make_backend(per_organization=1, total=4)
    for org in ("org_alice", "org_bob", "org_alice", "org_bob"):
        assert _call(backend, weather, org, "getWeather", {"city": "Paris"})["output"]["requestedBy"] == org
    alice = _containers(backend, **{"lightfast.organization": "org_alice"})
    bob = _containers(backend, **{"lightfast.organization": "org_bob"})
    assert len(alice) == 1 and len(bob) == 1 and alice[0]["Id"] != bob[0]["Id"]
    assert {w.organization for w in backend.containers()} == {"org_alice", "org_bob"}


def test_platform_bound_evicts_another_organizations_idle_container(
    make_backend: Any, weather: TransformedBundle
) -> None:
    backend = make_backend(per_organization=1, total=2)
    for org in ("org_a", "org_b", "org_c"):
        assert _call(backend, weather, org, "getWeather", {"city": "Paris"})["ok"] is True
    assert backend.status()["containers"] == 2
    assert {w.organization for w in backend.containers()} == {"org_b", "org_c"}


def test_a_limit_hit_or_cancel_replaces_the_container(make_backend: Any, hostile: TransformedBundle) -> None:
    backend = make_backend(per_organization=1)
    assert _call(backend, hostile, "org_mallory", "badInput", {"n": 1})["ok"] is True
    (first,) = backend.containers()
    loop = _call(backend, hostile, "org_mallory", "infiniteLoop", {}, limits=Limits(cpu_ms=300, wall_ms=1000))
    assert loop["error"]["type"] in {"cpu_limit", "timeout"}
    assert first.dead
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(SandboxError) as exc:
        _call(backend, hostile, "org_mallory", "infiniteLoop", {}, limits=LONG, cancel=cancel)
    assert exc.value.code == "cancelled"
    assert _call(backend, hostile, "org_mallory", "badInput", {"n": 21})["output"] == 42
    assert first.container_id not in {w.container_id for w in backend.containers()}


def test_a_container_killed_mid_call_is_a_crash_not_a_hang(
    make_backend: Any, hostile: TransformedBundle
) -> None:
    backend = make_backend(per_organization=1)
    assert _call(backend, hostile, "org_mallory", "badInput", {"n": 1})["ok"] is True
    (worker,) = backend.containers()
    threading.Timer(0.5, lambda: backend.client.api.kill(worker.container_id)).start()
    started = time.monotonic()
    with pytest.raises(SandboxError) as exc:
        _call(backend, hostile, "org_mallory", "infiniteLoop", {}, limits=LONG)
    assert exc.value.code == "sandbox_crash"
    assert time.monotonic() - started < 10
    assert _call(backend, hostile, "org_mallory", "badInput", {"n": 21})["output"] == 42


def test_introspection_uses_a_one_shot_container(make_backend: Any, weather: TransformedBundle) -> None:
    backend = make_backend()
    manifest = backend.introspect(script=weather.script, env={}, filename="bundle.js", limits=Limits())
    assert set(manifest["agents"]["weather"]["tools"]) == {"getWeather", "convertTemperature"}
    assert _eventually_none(backend)


def test_idle_containers_are_reaped(make_backend: Any, weather: TransformedBundle) -> None:
    backend = make_backend(idle_s=0.01)
    assert _call(backend, weather, "org_alice", "getWeather", {"city": "Paris"})["ok"] is True
    time.sleep(0.05)
    backend.reap_idle()  # the reaper thread may already have done it
    assert backend.containers() == [] and backend.status()["containers"] == 0
    assert _eventually_none(backend)


def test_orphans_of_dead_processes_are_removed_and_live_ones_kept(make_backend: Any) -> None:
    from execution.sandbox.docker_backend import LABEL_OWNER, LABEL_PLATFORM

    backend = make_backend()
    dead_owner = f"{socket.gethostname()}:999999999:0"
    created = []
    for owner in (dead_owner, backend.owner):
        created.append(
            backend.client.api.create_container(
                backend.dconfig.image,
                command=["--jail", "{}"],
                labels={LABEL_PLATFORM: backend.dconfig.platform, LABEL_OWNER: owner},
                network_disabled=True,
            )["Id"]
        )
    removed = backend.cleanup_orphans()
    assert removed == [created[0][:12]]
    assert [c["Id"] for c in _containers(backend)] == [created[1]]


def test_missing_image_and_unreachable_engine_are_classified(
    make_backend: Any, weather: TransformedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from execution.sandbox.docker_backend import DockerBackend, docker_status

    backend = make_backend(image="lightfast-sandbox-runner:does-not-exist")
    with pytest.raises(SandboxError) as exc:
        _call(backend, weather, "org_alice", "getWeather", {"city": "Paris"})
    assert exc.value.code == "sandbox_crash" and "build-image" in exc.value.message
    status = backend.status()
    assert status["ok"] is False and "missing" in status["error"]["message"]
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError) as unreachable:
        DockerBackend()
    assert unreachable.value.code == "sandbox_crash" and "unreachable" in unreachable.value.message
    assert "unreachable" in docker_status()["engine"] or docker_status()["started"] is True
