"""`LocalJailBackend`: a thread-safe pool of pre-started jailed runner processes on this machine.

Workers are sized to the cores, reused across calls and replaced (in the background)
when one crashed, timed out, was cancelled or broke the protocol. The host enforces
each call's wall limit itself (plus a small grace) and serves the runner's `fetch`
frames through the egress policy, so a wedged runner can never hold a caller.
Each worker keeps one zygote per bundle key (`load`), and every call of that key starts from
the zygote's post-load state: the native runner runs the call in the zygote and copies its
JS heap back from a snapshot afterwards (execution/sandbox/native/runner.c), the Python runner
forks a call child per call (runner.py). A call that hits a limit inside the engine leaves
the worker and its zygotes as they were. A zygote that died in a call (the kernel's CPU
backstop, a crash) comes back as that call's classified error with `zygote_lost`; the key is
forgotten here, so the next call of it sends `load` again.

Workers run the native runner (execution/sandbox/native/) unless LIGHTFAST_SANDBOX_RUNNER=python
or its binary is not built (then the Python runner, said once in the log); /healthz shows which.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execution.sandbox import jail
from execution.sandbox.egress import EgressPolicy, egress_fetch
from execution.sandbox.errors import CANCELLED, INVALID_INPUT, SANDBOX_CRASH, TIMEOUT, SandboxError
from execution.sandbox.frames import RunnerFrames, read_ready_frame
from execution.sandbox.limits import Limits
from execution.sandbox.native import native_runner_available
from execution.sandbox.protocol import ProtocolError, encode_frame, wait_readable, write_frame

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CANCEL_POLL_S = 0.05
RUNNERS = ("python", "native")
# native: the C runner (execution/sandbox/native/), same protocol and jail, a fraction of the CPU per
# call; python (execution/sandbox/runner.py) stays as the fallback when the binary is not built.
DEFAULT_RUNNER = "native"


def runner_from_env() -> str:
    """The runner LIGHTFAST_SANDBOX_RUNNER asks for (python or native), DEFAULT_RUNNER when unset."""
    name = (os.environ.get("LIGHTFAST_SANDBOX_RUNNER") or DEFAULT_RUNNER).strip().lower()
    if name not in RUNNERS:
        raise ValueError(f"LIGHTFAST_SANDBOX_RUNNER must be one of {', '.join(RUNNERS)}, not {name!r}")
    return name


_runner_fallback_logged = False


def resolve_runner(requested: str) -> str:
    """The runner workers will use: native only when its binary is built (said once in the log)."""
    global _runner_fallback_logged
    if requested == "native" and not native_runner_available():
        if not _runner_fallback_logged:
            _runner_fallback_logged = True
            logger.warning(
                "native sandbox runner requested but not built (run `make setup`); using the Python runner"
            )
        return "python"
    return requested


@dataclass(frozen=True)
class PoolConfig:
    """How many workers, how they are jailed, and how strict the host is."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    jail: jail.JailConfig = field(default_factory=jail.JailConfig)
    require_all_layers: bool = False
    zygotes_per_worker: int = 16
    # The engine stops calls at their limits itself; the host's kill is the backstop.
    grace_ms: int = 250
    start_timeout_s: float = 60.0
    python: str = sys.executable
    # python: execution/sandbox/runner.py; native: the C runner (execution/sandbox/native/).
    runner: str = field(default_factory=runner_from_env)
    # Test-only: accept `probe` frames, and keep these host fds open in the worker.
    test_probes: bool = False
    test_pass_fds: tuple[int, ...] = ()
    # Test-only (native runner): a zygote checks its restored JS heap against the snapshot after
    # every call and dies on any difference.
    test_verify_restore: bool = False
    # Test-only (native runner): restores copy nothing back (proves that the verify mode notices).
    test_break_restore: bool = False


class _Worker:
    """One runner process and what the host knows about it."""

    def __init__(self, config: PoolConfig, runner: str) -> None:
        layers = config.jail.layers
        module = "execution.sandbox.native.launch" if runner == "native" else "execution.sandbox.runner"
        argv = [config.python, "-m", module, "--jail", config.jail.to_json()]
        if config.test_probes:
            argv.append("--test-probes")
        if runner == "native" and config.test_verify_restore:
            argv.append("--test-verify-restore")
        if runner == "native" and config.test_break_restore:
            argv.append("--test-break-restore")
        env = {} if layers.clear_env else dict(os.environ)
        self.proc = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            pass_fds=config.test_pass_fds,
            start_new_session=True,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr  # noqa: S101 - pipes requested above
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        self.loaded: OrderedDict[str, None] = OrderedDict()
        self.next_id = 0
        self.dead = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.ready: dict[str, Any] = {}
        threading.Thread(
            target=self._drain_stderr, name=f"sandbox-stderr-{self.proc.pid}", daemon=True
        ).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr  # noqa: S101 - pipe requested in __init__
        for line in self.proc.stderr:
            logger.warning("sandbox worker %s: %s", self.proc.pid, line.decode(errors="replace").rstrip())

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Read the runner's first frame (jail status) or fail."""
        if not wait_readable(self.stdout, timeout):
            raise SandboxError(SANDBOX_CRASH, f"sandbox worker did not start within {timeout} s")
        self.ready = dict(read_ready_frame(self.stdout)["detail"])
        return self.ready

    def new_id(self) -> int:
        """Next frame id on this worker."""
        self.next_id += 1
        return self.next_id

    def kill(self) -> None:
        """Kill the runner and every zygote and child under it."""
        if self.dead:
            return
        self.dead = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def stop(self, timeout: float = 2.0) -> None:
        """Close stdin so the runner exits by itself, then make sure it did."""
        if self.dead:
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            logger.warning("sandbox worker %s did not exit on EOF; killing it", self.proc.pid)
        self.kill()


class LocalJailBackend:
    """Pre-started jailed workers on this machine; safe to call from many threads."""

    name = "local"

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        if self.config.runner not in RUNNERS:
            raise ValueError(f"unknown sandbox runner {self.config.runner!r}")
        self.runner = resolve_runner(self.config.runner)
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._warned: set[str] = set()
        self._status: dict[str, Any] = {}
        self._fetches = ThreadPoolExecutor(
            max_workers=max(4, self.config.workers * 4), thread_name_prefix="sandbox-egress"
        )
        first = self._start_worker()  # fail fast (and refuse) before starting the rest
        self._add(first)
        for _ in range(self.config.workers - 1):
            self._add(self._start_worker())

    # --- worker lifecycle ------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        worker = _Worker(self.config, self.runner)
        try:
            ready = worker.wait_ready(self.config.start_timeout_s)
        except (SandboxError, ProtocolError):
            worker.kill()
            raise
        layers: dict[str, str] = ready.get("layers", {})
        missing = {name: state for name, state in layers.items() if state != "on"}
        for name, state in missing.items():
            if name not in self._warned:
                self._warned.add(name)
                logger.warning("sandbox jail layer %s is %s", name, state)
        if ready.get("engine") != "ok" and "engine" not in self._warned:
            self._warned.add("engine")
            logger.error("sandbox engine unavailable in workers: %s", ready.get("engine"))
        self._status = {
            "backend": self.name,
            "runner": self.runner,
            "workers": self.config.workers,
            "layers": layers,
            "missing_layers": sorted(missing),
            "engine": ready.get("engine"),
            "require_all_layers": self.config.require_all_layers,
        }
        jail.record_status(self._status)
        if missing and self.config.require_all_layers:
            worker.kill()
            raise jail.JailUnavailable(f"jail layers unavailable and all are required: {missing}")
        return worker

    def _add(self, worker: _Worker) -> None:
        with self._lock:
            if self._closed:
                worker.stop()
                return
            self._all.add(worker)
            self._idle.append(worker)
            self._lock.notify()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start its successor in the background."""
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            if self._closed:
                return

        def start() -> None:
            try:
                self._add(self._start_worker())
            except (SandboxError, ProtocolError, OSError) as exc:
                logger.error("could not start a replacement sandbox worker: %s", exc)

        threading.Thread(target=start, name="sandbox-replace", daemon=True).start()

    def _checkout(self, key: str | None, deadline: float) -> _Worker:
        with self._lock:
            while not self._idle:
                if self._closed:
                    raise SandboxError(SANDBOX_CRASH, "the sandbox pool is shut down")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._lock.wait(remaining):
                    if not self._idle:
                        raise SandboxError(TIMEOUT, "no sandbox worker became free within the wall limit")
            # Prefer a worker whose zygote for this bundle is already warm.
            for index in range(len(self._idle) - 1, -1, -1):
                if key is not None and key in self._idle[index].loaded:
                    return self._idle.pop(index)
            return self._idle.pop()

    def _checkin(self, worker: _Worker) -> None:
        with self._lock:
            if worker.dead or self._closed:
                return
            self._idle.append(worker)
            self._lock.notify()

    def status(self) -> dict[str, Any]:
        """Jail layers, engine state and worker counts, for /healthz."""
        with self._lock:
            return {**self._status, "idle": len(self._idle), "alive": len(self._all)}

    def shutdown(self) -> None:
        """Stop every worker (no orphans); further calls fail."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._lock.notify_all()
        for worker in workers:
            worker.stop()
        self._fetches.shutdown(wait=False, cancel_futures=True)

    # --- one exchange ------------------------------------------------------------------
    def _exchange(
        self,
        worker: _Worker,
        frame: dict[str, Any],
        *,
        limits: Limits,
        cancel: threading.Event | None,
        egress: EgressPolicy | None,
    ) -> dict[str, Any]:
        """Send one request frame and serve the runner until its result; raise SandboxError on failure."""
        call_id = worker.new_id()
        frame = {**frame, "id": call_id}
        started = time.monotonic()
        deadline = started + (limits.wall_ms + self.config.grace_ms) / 1000
        frames = RunnerFrames(call_id=call_id, request=frame["type"], limits=limits, deadline=deadline)
        pending: dict[int, Future[dict[str, Any]]] = {}
        try:
            payload = encode_frame(frame)
        except (TypeError, ValueError, RecursionError) as exc:
            # Refused before anything reached the worker (e.g. NaN or a too deeply nested input).
            raise SandboxError(INVALID_INPUT, f"the input is not JSON: {exc}"[:500]) from None
        try:
            _write_all(worker.stdin, payload)
            while True:
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    self._send_quietly(worker, {"type": "cancel", "id": call_id})
                    self._replace(worker)
                    raise SandboxError(CANCELLED, "the call was cancelled")
                if now >= deadline:
                    self._replace(worker)
                    raise SandboxError(
                        TIMEOUT,
                        f"the sandbox did not answer within {limits.wall_ms} ms",
                        {"wall_ms": limits.wall_ms},
                    )
                timeout = deadline - now
                if cancel is not None:
                    timeout = min(timeout, _CANCEL_POLL_S)
                fds = [worker.stdout, worker.wake_r] if pending else [worker.stdout]
                readable = _select(fds, timeout)
                if worker.wake_r in readable:
                    self._deliver_fetches(worker, call_id, pending)
                if worker.stdout not in readable:
                    continue
                reply = frames.read(worker.stdout, pending)
                kind = reply.get("type")
                if kind == "log":
                    logger.info(
                        "sandbox worker %s: %s %s",
                        worker.proc.pid,
                        reply.get("message"),
                        reply.get("detail") or "",
                    )
                elif kind == "fetch" and reply.get("id") == call_id:
                    pending[int(reply["fetch_id"])] = self._start_fetch(
                        worker, reply, egress, limits, deadline
                    )
                elif kind == "result" and reply.get("id") == call_id:
                    return reply
                elif kind == "error" and reply.get("id") == call_id:
                    if reply.get("zygote_lost"):
                        # The bundle's zygote died (CPU backstop, crash): the next call loads it again.
                        worker.loaded.pop(str(frame.get("key")), None)
                    raise SandboxError.from_dict(dict(reply.get("error") or {}))
                else:
                    raise ProtocolError(f"unexpected {kind!r} frame for call {call_id}")
        except (ProtocolError, OSError) as exc:
            self._replace(worker)
            raise frames.failure(exc) from exc
        finally:
            for future in pending.values():
                future.cancel()

    @staticmethod
    def _send_quietly(worker: _Worker, frame: dict[str, Any]) -> None:
        try:
            write_frame(worker.stdin, frame)
        except OSError:
            return  # the worker is being killed anyway; the frame was a courtesy

    def _start_fetch(
        self,
        worker: _Worker,
        reply: dict[str, Any],
        egress: EgressPolicy | None,
        limits: Limits,
        deadline: float,
    ) -> Future[dict[str, Any]]:
        policy = egress or EgressPolicy()
        request = dict(reply.get("request") or {})
        budget_s = max(0.0, min(limits.fetch_timeout_ms / 1000, deadline - time.monotonic() - 0.05))
        future = self._fetches.submit(egress_fetch, request, policy=policy, timeout_s=budget_s, limits=limits)

        def wake(_: Future[dict[str, Any]]) -> None:
            try:
                os.write(worker.wake_w, b"x")
            except OSError:
                return  # the worker was replaced; nobody waits for this fetch any more

        future.add_done_callback(wake)
        return future

    def _deliver_fetches(
        self, worker: _Worker, call_id: int, pending: dict[int, Future[dict[str, Any]]]
    ) -> None:
        try:
            os.read(worker.wake_r, 4096)
        except BlockingIOError:
            pass  # a wake-up byte already consumed by an earlier pass
        for fetch_id, future in list(pending.items()):
            if future.done():
                del pending[fetch_id]
                result = future.result()
                write_frame(
                    worker.stdin,
                    {"type": "fetch-result", "id": call_id, "fetch_id": fetch_id, "result": result},
                )

    # --- operations -----------------------------------------------------------------------
    def introspect(
        self,
        *,
        script: str,
        env: dict[str, str],
        filename: str,
        limits: Limits,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Evaluate a bundle in a throw-away child and return its manifest."""
        worker = self._checkout(None, time.monotonic() + limits.wall_ms / 1000)
        try:
            reply = self._exchange(
                worker,
                {
                    "type": "introspect",
                    "script": script,
                    "env": env,
                    "filename": filename,
                    "limits": _limits_dict(limits),
                },
                limits=limits,
                cancel=cancel,
                egress=None,
            )
        finally:
            self._checkin(worker)
        manifest: dict[str, Any] = reply["manifest"]
        return manifest

    def invoke(
        self,
        *,
        key: str,
        script: str,
        env: dict[str, str],
        filename: str,
        agent: str,
        tool: str,
        input: Any,
        context: dict[str, Any],
        limits: Limits,
        egress: EgressPolicy | None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Run one tool call from the zygote state of its bundle (loaded first if needed); the result dict."""
        worker = self._checkout(key, time.monotonic() + limits.wall_ms / 1000)
        try:
            if key not in worker.loaded:
                evict: list[str] = []
                while len(worker.loaded) >= self.config.zygotes_per_worker:
                    evict.append(worker.loaded.popitem(last=False)[0])
                self._exchange(
                    worker,
                    {
                        "type": "load",
                        "key": key,
                        "script": script,
                        "env": env,
                        "filename": filename,
                        "evict": evict,
                        "limits": _limits_dict(limits),
                    },
                    limits=limits,
                    cancel=cancel,
                    egress=None,
                )
                worker.loaded[key] = None
            else:
                worker.loaded.move_to_end(key)
            return self._exchange(
                worker,
                {
                    "type": "invoke",
                    "key": key,
                    "agent": agent,
                    "tool": tool,
                    "input": input,
                    "context": context,
                    "limits": _limits_dict(limits),
                },
                limits=limits,
                cancel=cancel,
                egress=egress,
            )
        finally:
            self._checkin(worker)

    def probe(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        limits: Limits | None = None,
        egress: EgressPolicy | None = None,
        cancel: threading.Event | None = None,
        key: str | None = None,
    ) -> Any:
        """Test-only: run a jail probe in a throw-away child under the call jail (needs `test_probes=True`).

        With `key` (native runner, probe "arena"): the restore figures of that key's zygote, from
        a worker that has it loaded.
        """
        limits = limits or Limits(wall_ms=10_000)
        worker = self._checkout(key, time.monotonic() + limits.wall_ms / 1000)
        frame = {"type": "probe", "probe": name, "args": args or {}, "limits": _limits_dict(limits)}
        if key is not None:
            frame["key"] = key
        try:
            reply = self._exchange(worker, frame, limits=limits, cancel=cancel, egress=egress)
        finally:
            self._checkin(worker)
        return reply["probe"]


@functools.lru_cache(maxsize=256)
def _limits_dict(limits: Limits) -> dict[str, int]:
    """`limits.to_dict()`, once per distinct (frozen) limits: asdict costs ~20 us, a call ~300 us.

    The dict is shared between frames: it is only ever encoded, never changed.
    """
    return limits.to_dict()


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _select(fds: list[int], timeout: float) -> list[int]:
    import select

    readable, _, _ = select.select(fds, [], [], max(timeout, 0.0))
    return readable


_shared: LocalJailBackend | None = None
_shared_lock = threading.Lock()
_TRUE = {"1", "true", "yes", "on"}


def shared_local_backend(
    *, workers: int | None = None, require_all_layers: bool | None = None
) -> LocalJailBackend:
    """The process-wide pool, created on first use from arguments or LIGHTFAST_SANDBOX_* variables."""
    global _shared
    with _shared_lock:
        if _shared is None:
            count = workers or int(os.environ.get("LIGHTFAST_SANDBOX_WORKERS") or os.cpu_count() or 2)
            strict = require_all_layers
            if strict is None:
                strict = os.environ.get("LIGHTFAST_SANDBOX_REQUIRE_ALL_LAYERS", "").lower() in _TRUE
            _shared = LocalJailBackend(PoolConfig(workers=count, require_all_layers=strict))
        return _shared


def _forget_after_fork() -> None:
    # A forked child (e.g. a prefork Celery worker) must not share its parent's worker
    # pipes; it builds its own pool on first use and leaves the parent's alone.
    global _shared, _shared_lock
    _shared = None
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def shutdown_shared_backend() -> None:
    """Stop the process-wide pool at exit (no orphaned workers)."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.shutdown()
