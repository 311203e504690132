"""`DockerBackend`: the same runner and frames as the local jail, one warm container pool per organization.

Each container runs the native runner (`python -m execution.sandbox.native.launch`, which jails
itself and execve()s it, as in the local pool) as its entrypoint, locked down
(no network, read-only root, tmpfs /tmp, no capabilities, no-new-privileges, pids,
memory = memory+swap and CPU caps, non-root user, optional runtime such as runsc). The
host talks to it over the container's attached stdin/stdout; Docker multiplexes
stdout/stderr on that stream, so a reader thread unwraps stdout into a pipe and the
frame exchange of `LocalJailBackend` (fetch through the host's egress policy, wall
deadline, cancel) is reused unchanged.

A container only ever serves one organization (the part of the call's key before the
first ``:``, as `agents.selectors.version_bundle_key` builds it) and one call at a time.
Introspection runs in a one-shot container. A container whose call hit a limit, crashed
or was cancelled is removed and replaced; idle ones are reaped; containers left behind by
a dead host process are found by their labels and removed at start-up and periodically.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from execution.sandbox import jail
from execution.sandbox.egress import EgressPolicy, FetchScheduler
from execution.sandbox.errors import LIMIT_CODES, MEMORY_LIMIT, SANDBOX_CRASH, TIMEOUT, SandboxError
from execution.sandbox.frames import read_ready_frame
from execution.sandbox.image.rootfs import DEFAULT_IMAGE, RUNNER_UID
from execution.sandbox.limits import Limits
from execution.sandbox.pool import LocalJailBackend, organization_of
from execution.sandbox.protocol import ProtocolError, wait_readable
from lightfast_cloud.outages import Outage, loop_forever

logger = logging.getLogger(__name__)

LABEL_PLATFORM = "lightfast.platform"
LABEL_ORGANIZATION = "lightfast.organization"
LABEL_RUN = "lightfast.run"
LABEL_OWNER = "lightfast.owner"
INTROSPECT_ORGANIZATION = "-introspect-"
# Inside a container, the container provides the network and user isolation the local
# jail adds with a netns and a uid drop (neither is possible without capabilities).
CONTAINER_JAIL = jail.JailConfig(layers=jail.JailLayers(drop_uid=False, netns=False))
_MUX_HEADER = struct.Struct(">BxxxL")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class DockerConfig:
    """Image, container limits and pool bounds of the Docker backend."""

    image: str = field(
        default_factory=lambda: os.environ.get("LIGHTFAST_SANDBOX_DOCKER_IMAGE") or DEFAULT_IMAGE
    )
    runtime: str | None = field(
        default_factory=lambda: os.environ.get("LIGHTFAST_SANDBOX_DOCKER_RUNTIME") or None
    )
    per_organization: int = field(default_factory=lambda: _env_int("LIGHTFAST_SANDBOX_DOCKER_PER_ORG", 2))
    total: int = field(default_factory=lambda: _env_int("LIGHTFAST_SANDBOX_DOCKER_TOTAL", 16))
    idle_s: float = field(default_factory=lambda: float(_env_int("LIGHTFAST_SANDBOX_DOCKER_IDLE_S", 300)))
    memory_mb: int = field(default_factory=lambda: _env_int("LIGHTFAST_SANDBOX_DOCKER_MEMORY_MB", 512))
    nano_cpus: int = 1_000_000_000
    pids: int = 64
    tmpfs_mb: int = 16
    user: str = f"{RUNNER_UID}:{RUNNER_UID}"
    platform: str = field(default_factory=lambda: os.environ.get("LIGHTFAST_PLATFORM_ID") or "lightfast")
    start_timeout_s: float = 30.0
    reap_interval_s: float = 30.0
    # Read by the reused `LocalJailBackend` exchange and invoke code.
    grace_ms: int = 100
    zygotes_per_worker: int = 16
    workers: int = 0


def owner_label() -> str:
    """This host process, as written on its containers: host name, pid and process start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "gone"


def owner_alive(owner: str) -> bool:
    """Whether the process that labelled a container still runs (only decidable on its own host)."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True  # another machine's containers are its own to reap
    return pid.isdigit() and _process_start(int(pid)) == started


def docker_client(timeout: float = 30.0) -> Any:
    """A Docker SDK client for DOCKER_HOST; raises SandboxError(sandbox_crash) when unreachable."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise SandboxError(
            SANDBOX_CRASH,
            f"the Docker engine is unreachable at {os.environ.get('DOCKER_HOST') or 'its default socket'}: "
            f"{exc}",
        ) from exc
    return client


@dataclass
class _ContainerProc:
    """What the reused exchange code logs as the worker's `proc.pid`."""

    pid: str


class _ContainerWorker:
    """One runner container attached over stdin/stdout; the `_Worker` interface of the local pool."""

    def __init__(self, backend: DockerBackend, organization: str, run_label: str) -> None:
        import docker.errors

        self.backend = backend
        self.organization = organization
        self.loaded: OrderedDict[str, None] = OrderedDict()
        # Relay mode: the attached stdio cannot carry fds, so loads and calls go over it (the
        # container serves one organization; see pool.py's zygote channels for the local jail).
        self.channels = False
        self.next_id = 0
        self.dead = False
        self.last_used = time.monotonic()
        self.container_id = ""
        self.ready: dict[str, Any] = {}
        self.oom_killed = False
        self.finished = threading.Event()
        api = backend.client.api
        config = backend.dconfig
        host_config = api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={config.tmpfs_mb}m"},  # noqa: S108 - container path
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=config.pids,
            mem_limit=f"{config.memory_mb}m",
            memswap_limit=f"{config.memory_mb}m",
            nano_cpus=config.nano_cpus,
            runtime=config.runtime,
            ipc_mode="none",
            auto_remove=False,
        )
        try:
            created = api.create_container(
                config.image,
                command=["--jail", CONTAINER_JAIL.to_json()],
                user=config.user,
                stdin_open=True,
                tty=False,
                network_disabled=True,
                labels={
                    LABEL_PLATFORM: config.platform,
                    LABEL_ORGANIZATION: organization,
                    LABEL_RUN: run_label,
                    LABEL_OWNER: backend.owner,
                },
                host_config=host_config,
            )
            self.container_id = str(created["Id"])
            self.proc = _ContainerProc(self.container_id[:12])
            # Attach before start so the runner's `ready` frame cannot be missed.
            response = api.attach_socket(
                self.container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self.sock: socket.socket = getattr(response, "_sock", response)
            self.sock.settimeout(None)  # blocking fd: frames are written with os.write
            api.start(self.container_id)
        except docker.errors.ImageNotFound as exc:
            self._remove_quietly()
            raise SandboxError(
                SANDBOX_CRASH,
                f"sandbox image {config.image!r} is missing: run `python manage.py sandbox build-image`",
            ) from exc
        except (docker.errors.DockerException, OSError) as exc:
            self._remove_quietly()
            raise SandboxError(SANDBOX_CRASH, f"could not start a sandbox container: {exc}") from exc
        self.stdin = self.sock.fileno()
        self.stdout, self._stdout_w = os.pipe()
        os.set_blocking(self.stdout, False)  # frames.py reads without a poll while bytes are there
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        threading.Thread(target=self._demux, name=f"sandbox-docker-{self.proc.pid}", daemon=True).start()

    def _demux(self) -> None:
        """Unwrap Docker's stdout/stderr multiplexing: stdout bytes to the pipe, stderr to the log."""
        try:
            while True:
                header = self._recv_exact(_MUX_HEADER.size)
                if header is None:
                    return
                stream, size = _MUX_HEADER.unpack(header)
                payload = self._recv_exact(size)
                if payload is None:
                    return
                if stream == 1:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(self._stdout_w, view) :]
                else:
                    for line in payload.decode(errors="replace").splitlines():
                        logger.warning("sandbox container %s: %s", self.proc.pid, line)
        except OSError as exc:
            if not self.dead:
                logger.warning("sandbox container %s stream ended: %s", self.proc.pid, exc)
        finally:
            # EOF on the pipe is how the exchange learns the container is gone.
            os.close(self._stdout_w)

    def _recv_exact(self, size: int) -> bytes | None:
        chunks: list[bytes] = []
        while size:
            chunk = self.sock.recv(min(size, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Read the runner's first frame (jail status) or fail."""
        if not wait_readable(self.stdout, timeout):
            raise SandboxError(SANDBOX_CRASH, f"sandbox container did not start within {timeout} s")
        self.ready = dict(read_ready_frame(self.stdout)["detail"])
        if self.ready.get("engine") != "ok":
            raise SandboxError(SANDBOX_CRASH, f"sandbox engine unavailable in the container: {self.ready}")
        return self.ready

    def new_id(self) -> int:
        """Next frame id on this container."""
        self.next_id += 1
        return self.next_id

    def close_streams(self) -> None:
        """Mark dead and drop the host's ends of the streams (the reader thread then exits)."""
        if self.dead:
            return
        self.dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the engine already closed the stream
        self.sock.close()
        for fd in (self.stdout, self.wake_r, self.wake_w):
            os.close(fd)

    def retire(self) -> None:
        """Close the streams now; kill, inspect (OOM?) and remove the container in the background."""
        if self.dead:
            return
        self.close_streams()
        threading.Thread(target=self._finish, name=f"sandbox-docker-rm-{self.proc.pid}", daemon=True).start()

    def _finish(self) -> None:
        import docker.errors

        api = self.backend.client.api
        try:
            api.kill(self.container_id)
        except docker.errors.APIError:
            pass  # already stopped (crashed or OOM-killed): exactly the case inspected below
        except OSError as exc:
            logger.warning("could not kill sandbox container %s: %s", self.proc.pid, exc)
        try:
            api.wait(self.container_id, timeout=5)
            self.oom_killed = bool(api.inspect_container(self.container_id)["State"].get("OOMKilled"))
        except (docker.errors.DockerException, OSError) as exc:
            logger.warning("could not inspect sandbox container %s: %s", self.proc.pid, exc)
        finally:
            self.finished.set()
        self._remove_quietly()

    def _remove_quietly(self) -> None:
        import docker.errors

        if not self.container_id:
            return
        try:
            self.backend.client.api.remove_container(self.container_id, force=True)
        except (docker.errors.DockerException, OSError) as exc:
            # The periodic orphan sweep removes it later by its labels.
            logger.warning("could not remove sandbox container %s: %s", self.container_id[:12], exc)

    def remove(self) -> None:
        """Close the streams and remove the container (force: it may still run)."""
        self.close_streams()
        self._remove_quietly()


class DockerBackend(LocalJailBackend):
    """Warm runner containers per organization behind the local pool's frame exchange."""

    name = "docker"

    def __init__(self, config: DockerConfig | None = None, *, client: Any = None) -> None:
        # The pool's own __init__ starts local workers: set up only what the reused code reads.

        self.config = config or DockerConfig()  # type: ignore[assignment]
        self.dconfig: DockerConfig = self.config  # type: ignore[assignment]
        self.owner = owner_label()
        self._lock = threading.Condition()
        self._idle_by_org: dict[str, list[_ContainerWorker]] = {}
        self._count_by_org: dict[str, int] = {}
        self._total = 0
        self._closed = False
        self._last_error: str | None = None
        self._status: dict[str, Any] = {}
        self._fetches = FetchScheduler()
        self._local = threading.local()
        # Attached stdio cannot carry fds: the runner relays, and each container is one organization's.
        self._zygote_channels = False
        self.client = client or docker_client()
        self.cleanup_orphans()
        self._reaper_stop = threading.Event()
        threading.Thread(target=self._reap_loop, name="sandbox-docker-reaper", daemon=True).start()

    # --- containers ------------------------------------------------------------------
    def _start_container(self, organization: str, run_label: str) -> _ContainerWorker:
        worker = _ContainerWorker(self, organization, run_label)
        try:
            worker.wait_ready(self.dconfig.start_timeout_s)
        except (SandboxError, ProtocolError) as exc:
            worker.remove()
            self._last_error = str(exc)
            raise SandboxError(SANDBOX_CRASH, f"sandbox container failed to start: {exc}") from exc
        self._last_error = None
        self._status = {"layers": worker.ready.get("layers", {}), "engine": worker.ready.get("engine")}
        return worker

    def _reserve(self, organization: str, deadline: float) -> _ContainerWorker | None:
        """Under the lock: an idle container of the org, or None after reserving a slot for a new one."""
        while True:
            if self._closed:
                raise SandboxError(SANDBOX_CRASH, "the sandbox pool is shut down")
            idle = self._idle_by_org.get(organization)
            if idle:
                return idle.pop()
            own = self._count_by_org.get(organization, 0)
            if own < self.dconfig.per_organization:
                if self._total >= self.dconfig.total:
                    self._evict_idle_other(organization)
                if self._total < self.dconfig.total:
                    self._count_by_org[organization] = own + 1
                    self._total += 1
                    return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._lock.wait(remaining):
                raise SandboxError(TIMEOUT, "no sandbox container became free within the wall limit")

    def _evict_idle_other(self, organization: str) -> None:
        """Make room platform-wide: remove the longest-idle container of another organization."""
        candidates = [w for org, ws in self._idle_by_org.items() if org != organization for w in ws]
        if not candidates:
            return
        oldest = min(candidates, key=lambda w: w.last_used)
        self._idle_by_org[oldest.organization].remove(oldest)
        self._forget(oldest)
        threading.Thread(target=oldest.remove, daemon=True).start()

    def _forget(self, worker: _ContainerWorker) -> None:
        """Under the lock: release the slot of a container that is going away."""
        self._count_by_org[worker.organization] = self._count_by_org.get(worker.organization, 1) - 1
        if self._count_by_org[worker.organization] <= 0:
            self._count_by_org.pop(worker.organization, None)
            self._idle_by_org.pop(worker.organization, None)
        self._total -= 1
        self._lock.notify_all()

    def _checkout(self, key: str | None, deadline: float) -> _ContainerWorker:  # type: ignore[override]
        organization = organization_of(key) if key is not None else f"{INTROSPECT_ORGANIZATION}{uuid.uuid4()}"
        with self._lock:
            worker = self._reserve(organization, deadline)
        if worker is None:
            try:
                worker = self._start_container(organization, "introspect" if key is None else "warm-pool")
            except SandboxError:
                with self._lock:
                    self._count_by_org[organization] -= 1
                    if self._count_by_org[organization] <= 0:
                        del self._count_by_org[organization]
                    self._total -= 1
                    self._lock.notify_all()
                raise
        self._local.worker = worker
        return worker

    def _checkin(self, worker: _ContainerWorker) -> None:  # type: ignore[override]
        with self._lock:
            if worker.dead:
                return
            if self._closed or worker.organization.startswith(INTROSPECT_ORGANIZATION):
                self._forget(worker)
                gone = True
            else:
                worker.last_used = time.monotonic()
                self._idle_by_org.setdefault(worker.organization, []).append(worker)
                self._lock.notify_all()
                gone = False
        if gone:
            threading.Thread(target=worker.remove, daemon=True).start()

    def _replace(self, worker: _ContainerWorker) -> None:  # type: ignore[override]
        """Retire a container now (streams closed at once, removal in the background) and warm a successor."""
        if worker.dead:
            return
        worker.retire()
        self._release_and_refill(worker)

    def _release_and_refill(self, worker: _ContainerWorker) -> None:
        with self._lock:
            self._forget(worker)
            if self._closed or worker.organization.startswith(INTROSPECT_ORGANIZATION):
                return
            refill = self._count_by_org.get(worker.organization, 0) == 0 and self._total < self.dconfig.total
            if refill:
                self._count_by_org[worker.organization] = 1
                self._total += 1
        if refill:
            threading.Thread(target=self._refill, args=(worker.organization,), daemon=True).start()

    def _refill(self, organization: str) -> None:
        try:
            successor = self._start_container(organization, "warm-pool")
        except SandboxError as exc:
            logger.error("could not start a replacement sandbox container: %s", exc.message)
            with self._lock:
                self._count_by_org[organization] = self._count_by_org.get(organization, 1) - 1
                if self._count_by_org[organization] <= 0:
                    self._count_by_org.pop(organization, None)
                self._total -= 1
                self._lock.notify_all()
            return
        self._checkin(successor)

    # --- the exchange, with container-level classification --------------------------------
    def _exchange(  # type: ignore[override]
        self,
        worker: _ContainerWorker,
        frame: dict[str, Any],
        *,
        limits: Limits,
        cancel: threading.Event | None,
        egress: EgressPolicy | None,
    ) -> dict[str, Any]:
        """The local pool's exchange; then a limit hit or crash retires the container (OOM → memory_limit)."""
        try:
            reply = super()._exchange(worker, frame, limits=limits, cancel=cancel, egress=egress)  # type: ignore[arg-type]
        except SandboxError as exc:
            if exc.code == SANDBOX_CRASH:
                # A dead stream or a call child killed by SIGKILL: ask the engine whether
                # the container's memory cgroup OOM-killed it before calling it a crash.
                self._replace(worker)
                worker.finished.wait(10)
                if worker.oom_killed:
                    oom = SandboxError(
                        MEMORY_LIMIT,
                        f"the sandbox container ran out of memory ({self.dconfig.memory_mb} MB) "
                        "and was OOM-killed",
                        {"container_memory_mb": self.dconfig.memory_mb},
                    )
                    oom.usage = exc.usage
                    raise oom from exc
            elif exc.code in LIMIT_CODES and not worker.dead:
                self._replace(worker)
            raise
        error = reply.get("error")
        if reply.get("ok") is False and isinstance(error, dict) and error.get("type") in LIMIT_CODES:
            self._replace(worker)
        return reply

    # --- housekeeping --------------------------------------------------------------------
    def cleanup_orphans(self, *, everything: bool = False) -> list[str]:
        """Remove this platform's containers whose owning process is gone (or all with `everything`)."""
        import docker.errors

        removed: list[str] = []
        try:
            found = self.client.api.containers(
                all=True, filters={"label": f"{LABEL_PLATFORM}={self.dconfig.platform}"}
            )
        except (docker.errors.DockerException, OSError) as exc:
            self._last_error = f"orphan sweep failed: {exc}"
            logger.warning("sandbox orphan sweep failed: %s", exc)
            return removed
        for info in found:
            owner = str((info.get("Labels") or {}).get(LABEL_OWNER, ""))
            if owner == self.owner and not everything:
                continue
            if everything or not owner_alive(owner):
                try:
                    self.client.api.remove_container(info["Id"], force=True)
                    removed.append(str(info["Id"])[:12])
                except docker.errors.NotFound:
                    continue  # removed concurrently
                except docker.errors.APIError as exc:
                    logger.warning("could not remove orphan container %s: %s", info["Id"][:12], exc)
        if removed:
            logger.info("removed %d orphaned sandbox containers", len(removed))
        return removed

    def reap_idle(self) -> int:
        """Remove containers idle for longer than `idle_s`; return how many."""
        cutoff = time.monotonic() - self.dconfig.idle_s
        stale: list[_ContainerWorker] = []
        with self._lock:
            for idle in self._idle_by_org.values():
                for worker in [w for w in idle if w.last_used < cutoff]:
                    idle.remove(worker)
                    stale.append(worker)
            for worker in stale:
                self._forget(worker)
        for worker in stale:
            worker.remove()
        return len(stale)

    def _reap_loop(self) -> None:
        sweeps = 0
        interval = min(self.dconfig.reap_interval_s, self.dconfig.idle_s)

        def sweep() -> None:
            nonlocal sweeps
            sweeps += 1
            self.reap_idle()
            if sweeps % 10 == 0:
                self.cleanup_orphans()

        # An engine that stops answering must not end the reaper: it backs off and resumes.
        outage = Outage("sandbox container reaper (Docker engine)", logger=logger, max_delay_s=30.0)
        if not self._reaper_stop.wait(interval):
            loop_forever(sweep, outage=outage, interval_s=interval, stop=self._reaper_stop)

    def status(self) -> dict[str, Any]:
        """Engine reachability, image, pool counts and the last engine error, for /healthz."""
        import docker.errors

        with self._lock:
            counts = dict(self._count_by_org)
            idle = sum(len(ws) for ws in self._idle_by_org.values())
            total = self._total
        engine: str = "ok"
        try:
            self.client.ping()
            self.client.images.get(self.dconfig.image)
        except docker.errors.ImageNotFound:
            engine = f"image {self.dconfig.image!r} missing: run `python manage.py sandbox build-image`"
        except (docker.errors.DockerException, OSError) as exc:
            engine = f"Docker engine unreachable: {exc}"
        # `ok`/`error` are what /healthz reads from the status each worker publishes.
        healthy = engine == "ok" and self._status.get("engine", "ok") == "ok"
        return {
            "ok": healthy,
            "error": None if healthy else {"type": SANDBOX_CRASH, "message": engine, "detail": {}},
            "backend": self.name,
            "engine": engine if engine != "ok" else self._status.get("engine", "ok"),
            "docker": engine,
            "image": self.dconfig.image,
            "runtime": self.dconfig.runtime,
            "layers": self._status.get("layers", {}),
            "containers": total,
            "idle": idle,
            "organizations": len([o for o in counts if not o.startswith(INTROSPECT_ORGANIZATION)]),
            "per_organization": self.dconfig.per_organization,
            "total_limit": self.dconfig.total,
            "last_error": self._last_error,
        }

    def containers(self) -> list[_ContainerWorker]:
        """Idle containers by organization (tests and the `sandbox status` command look at them)."""
        with self._lock:
            return [w for ws in self._idle_by_org.values() for w in ws]

    def shutdown(self) -> None:
        """Remove every container of this pool (no orphans); further calls fail."""
        self._reaper_stop.set()
        with self._lock:
            self._closed = True
            workers = [w for ws in self._idle_by_org.values() for w in ws]
            self._idle_by_org.clear()
            self._lock.notify_all()
        for worker in workers:
            worker.remove()
        self._fetches.shutdown()

    def probe(self, *args: Any, **kwargs: Any) -> Any:
        """Jail probes are a local-pool test hook; containers never accept them."""
        raise SandboxError(SANDBOX_CRASH, "probes are not available in the docker backend")


_shared: DockerBackend | None = None
_shared_lock = threading.Lock()


def shared_docker_backend() -> DockerBackend:
    """The process-wide Docker backend, created on first use (orphans swept then)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed:
            _shared = DockerBackend()
        return _shared


def shutdown_shared_docker_backend() -> None:
    """Remove this process's containers (registered at exit)."""
    global _shared
    with _shared_lock:
        backend, _shared = _shared, None
    if backend is not None:
        backend.shutdown()


import atexit  # noqa: E402 - registered after the function it calls exists

atexit.register(shutdown_shared_docker_backend)


def docker_status() -> dict[str, Any]:
    """Docker backend status for /healthz without starting a pool: the pool's, or a direct engine check."""
    with _shared_lock:
        backend = _shared
    if backend is not None and not backend._closed:
        return {"started": True, **backend.status()}
    try:
        client = docker_client(timeout=5)
    except SandboxError as exc:
        return {"started": False, "engine": exc.message, "docker": exc.message}
    image = DockerConfig().image
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        message = f"image {image!r} missing: run `python manage.py sandbox build-image`"
        return {"started": False, "engine": message, "docker": message}
    except (docker.errors.DockerException, OSError) as exc:
        return {"started": False, "engine": f"Docker engine error: {exc}", "docker": str(exc)}
    return {"started": False, "engine": "ok", "docker": "ok", "image": image}
