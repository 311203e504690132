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

With the native runner every zygote owns its own channel: on `load` the worker forks the zygote
on a fresh pipe pair and passes the host's ends over its stdin (a unix socket) with SCM_RIGHTS;
the host then serves that zygote's load answer, invokes, fetches and cancels directly, and the
worker's own channel carries only `load` (a fork), `evict`, `reap` (how a zygote died), introspect
(in a throw-away zygote) and test probes. Calls of different keys on one worker run side by side;
a key has at most one zygote per worker. Anything unexpected in an exchange (a broken frame, a
timeout, a cancel, an exception on this side) kills what the exchange touched (that zygote, or
the worker when its own channel broke), never hands it back. Idle zygotes are measured from
/proc and reaped above the per-zygote, per-organization and pool resident budgets (PoolConfig).
The Python runner and the Docker backend (attached stdio cannot carry fds; one container pool
per organization) keep the relay mode: load and invoke over the worker's stdio.

Workers run the native runner (execution/sandbox/native/) unless LIGHTFAST_SANDBOX_RUNNER=python
or its binary is not built (then the Python runner, said once in the log); /healthz shows which.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execution.sandbox import jail
from execution.sandbox.egress import EgressPolicy, FetchScheduler
from execution.sandbox.errors import CANCELLED, INVALID_INPUT, SANDBOX_CRASH, TIMEOUT, SandboxError
from execution.sandbox.frames import RunnerFrames, read_ready_frame
from execution.sandbox.limits import Limits
from execution.sandbox.native import native_runner_available
from execution.sandbox.protocol import PeerClosed, ProtocolError, encode_frame, wait_readable
from lightfast_cloud.outages import Outage, loop_forever

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CANCEL_POLL_S = 0.05
# A sandbox worker that cannot be replaced is tried again after 0.5 s, 1 s, 2 s… at most this long.
REPLACE_MAX_BACKOFF_S = 10.0
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
    # Resident memory of the zygotes (private pages, measured by the host from /proc): the pool's
    # total, one organization's share of it, and one zygote's cap. Idle zygotes above a bound are
    # reaped (least recently used first); the next call of their key loads it again.
    memory_budget_mb: int = field(default_factory=lambda: _env_mb("LIGHTFAST_SANDBOX_MEMORY_BUDGET_MB", 2048))
    organization_memory_mb: int = field(
        default_factory=lambda: _env_mb("LIGHTFAST_SANDBOX_ORGANIZATION_MEMORY_MB", 1024)
    )
    zygote_resident_mb: int = field(
        default_factory=lambda: _env_mb("LIGHTFAST_SANDBOX_ZYGOTE_RESIDENT_MB", 128)
    )
    # How often idle zygotes are measured (0: only when `sweep_memory` is called).
    memory_sweep_s: float = 1.0


def _env_mb(name: str, default: int) -> int:
    value = int(os.environ.get(name) or default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of MB, not {value}")
    return value


def organization_of(key: str) -> str:
    """The organization a zygote key belongs to: everything before the first ':'."""
    return key.split("|", 1)[0].split(":", 1)[0]


INTROSPECT_KEY_PREFIX = "-introspect-:"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _private_resident_bytes(pid: int) -> int | None:
    """Resident pages of `pid` that are not file-backed or shared memory (None: it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            fields = statm.read().split()
    except OSError:
        return None
    return max(0, int(fields[1]) - int(fields[2])) * _PAGE_SIZE


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
        # Zygote channels (native runner): stdin is a unix socket over which the worker passes
        # the host its end of each zygote's own channel (see "zygote channels" in runner.c).
        self.channels = runner == "native"
        self.sock: socket.socket | None = None
        stdin: int = subprocess.PIPE
        if self.channels:
            argv.append("--zygote-channels")
            self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            stdin = theirs.fileno()
        env = {} if layers.clear_env else dict(os.environ)
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                pass_fds=config.test_pass_fds,
                start_new_session=True,
            )
        finally:
            if self.sock is not None:
                theirs.close()
        assert self.proc.stdout and self.proc.stderr  # noqa: S101 - pipes requested above
        if self.sock is not None:
            self.stdin = self.sock.fileno()
        else:
            assert self.proc.stdin  # noqa: S101 - pipe requested above
            self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        os.set_blocking(self.stdout, False)  # frames.py reads without a poll while bytes are there
        # Keys loaded in this worker (channel mode: with their zygotes), least recently used first.
        self.loaded: OrderedDict[str, Any] = OrderedDict()
        self.pending_evict: list[str] = []  # keys the host dropped that the worker still has to reap
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
        try:
            for line in self.proc.stderr:
                logger.warning("sandbox worker %s: %s", self.proc.pid, line.decode(errors="replace").rstrip())
        except (OSError, ValueError):
            pass  # the pipe went with its runner (killed, replaced): nothing is left to drain

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
        if self.sock is not None:
            self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def stop(self, timeout: float = 2.0) -> None:
        """Close stdin so the runner exits by itself, then make sure it did."""
        if self.dead:
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_WR)
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            logger.warning("sandbox worker %s did not exit on EOF; killing it", self.proc.pid)
        self.kill()


@dataclass(frozen=True)
class _ZygoteProc:
    pid: int


class _Zygote:
    """A bundle key's zygote in one worker, reached over its own channel (channel mode).

    Its owner (the thread that marked it busy) is the only one that reads or writes its fds;
    whoever kills an idle one closes them, the owner closes them when it lets a dead one go.
    """

    def __init__(self, worker: _Worker, key: str, pid: int, to_zygote: int, from_zygote: int) -> None:
        self.worker = worker
        self.key = key
        self.organization = organization_of(key)
        self.proc = _ZygoteProc(pid)
        self.stdin = to_zygote
        self.stdout = from_zygote
        # A zygote that stops reading must not block the host's writes past the call's deadline.
        os.set_blocking(to_zygote, False)
        os.set_blocking(from_zygote, False)  # frames.py reads without a poll while bytes are there
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.next_id = 0
        self.busy = True
        self.dead = False
        self.closed = False
        self.last_used = time.monotonic()
        self.resident = 0  # bytes, last measured
        # CPU ms already metered for this zygote (its load and its calls): when it dies in a call,
        # the call's CPU is the kernel's figure for its whole life minus this.
        self.metered_ms = 0

    def new_id(self) -> int:
        """Next frame id on this channel."""
        self.next_id += 1
        return self.next_id

    def close(self) -> None:
        """Drop the host's ends of the channel (the zygote reads EOF and exits if still alive)."""
        if self.closed:
            return
        self.closed = True
        for fd in (self.stdin, self.stdout, self.wake_r, self.wake_w):
            os.close(fd)


class LocalJailBackend:
    """Pre-started jailed workers on this machine; safe to call from many threads."""

    name = "local"

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        if self.config.runner not in RUNNERS:
            raise ValueError(f"unknown sandbox runner {self.config.runner!r}")
        self.runner = resolve_runner(self.config.runner)
        # Native workers give each zygote its own channel; the Python runner relays (see invoke).
        self._zygote_channels = self.runner == "native"
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._warned: set[str] = set()
        self._status: dict[str, Any] = {}
        # Fetches run in one lane per organization: one organization's slow servers cannot
        # hold the threads another organization's fetches need.
        self._fetches = FetchScheduler()
        self._zygotes: dict[str, list[_Zygote]] = {}  # live zygotes by key (channel mode)
        first = self._start_worker()  # fail fast (and refuse) before starting the rest
        self._add(first)
        for _ in range(self.config.workers - 1):
            self._add(self._start_worker())
        self._sweeper_stop = threading.Event()
        if first.channels and self.config.memory_sweep_s > 0:
            threading.Thread(target=self._sweep_loop, name="sandbox-memory", daemon=True).start()

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
        """Kill a worker (and every zygote of it) and start its successor in the background."""
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            for zygote in list(worker.loaded.values()) if worker.channels else ():
                self._forget_zygote(zygote)
                if not zygote.busy:
                    zygote.close()
            self._lock.notify_all()
            if self._closed:
                return

        def start() -> None:
            # Until it works (or the pool closes): a pool that lost its workers for good would make
            # every later call wait out its wall limit.
            outage = Outage("sandbox worker replacement", logger=logger, max_delay_s=REPLACE_MAX_BACKOFF_S)
            while not self._closed:
                try:
                    worker = self._start_worker()
                except Exception as exc:  # noqa: BLE001 - retried with backoff; the pool must get its worker back
                    time.sleep(outage.failed(exc))
                    continue
                outage.recovered()
                self._add(worker)
                return

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
            self._lock.notify_all()

    def _checkout_this(self, worker: _Worker, deadline: float) -> bool:
        """Take the control channel of one given worker (False: it died, or not within the deadline)."""
        with self._lock:
            while worker not in self._idle:
                remaining = deadline - time.monotonic()
                if worker.dead or self._closed or remaining <= 0:
                    return False
                self._lock.wait(remaining)
            self._idle.remove(worker)
            return True

    def status(self) -> dict[str, Any]:
        """Jail layers, engine state and worker counts, for /healthz."""
        with self._lock:
            zygotes = [zygote for group in self._zygotes.values() for zygote in group]
            return {
                **self._status,
                "idle": len(self._idle),
                "alive": len(self._all),
                "zygotes": len(zygotes),
                "zygote_resident_mb": round(sum(zygote.resident for zygote in zygotes) / 2**20, 1),
            }

    def shutdown(self) -> None:
        """Stop every worker (no orphans); further calls fail."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._lock.notify_all()
        self._sweeper_stop.set()
        for worker in workers:
            worker.stop()
        self._fetches.shutdown()

    # --- one exchange ------------------------------------------------------------------
    def _exchange(
        self,
        worker: Any,
        frame: dict[str, Any],
        *,
        limits: Limits,
        cancel: threading.Event | None,
        egress: EgressPolicy | None,
    ) -> dict[str, Any]:
        """Send one request frame on a channel (a worker's or a zygote's) and serve it until its result.

        Raises SandboxError on failure. Whatever goes wrong on the host's side of the exchange
        (a broken frame, a timeout, a cancel, a bug here) kills what the exchange touched, the
        zygote or the worker, so nothing is ever handed back in an unknown state.
        """
        call_id = worker.new_id()
        frame = {**frame, "id": call_id}
        deadline = time.monotonic() + (limits.wall_ms + self.config.grace_ms) / 1000
        try:
            payload = encode_frame(frame)
        except (TypeError, ValueError, RecursionError) as exc:
            # Refused before anything reached the worker (e.g. NaN or a too deeply nested input).
            raise SandboxError(INVALID_INPUT, f"the input is not JSON: {exc}"[:500]) from None
        return self._serve(
            worker,
            call_id,
            payload,
            request=frame["type"],
            limits=limits,
            cancel=cancel,
            egress=egress,
            deadline=deadline,
        )

    def _serve(
        self,
        channel: Any,
        call_id: int,
        payload: bytes | None,
        *,
        request: str,
        limits: Limits,
        cancel: threading.Event | None,
        egress: EgressPolicy | None,
        deadline: float,
    ) -> dict[str, Any]:
        """Write `payload` (if any), then serve the runner's frames until call `call_id`'s answer."""
        pending: dict[int, Future[dict[str, Any]]] = {}
        answer: dict[str, Any] | SandboxError
        frames = RunnerFrames(
            call_id=call_id, request=request, limits=limits, deadline=deadline, nonblocking=True
        )
        try:
            if payload is not None:
                _write_all(channel.stdin, payload, deadline)
            while True:
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    self._send_quietly(channel, {"type": "cancel", "id": call_id})
                    raise SandboxError(CANCELLED, "the call was cancelled")
                if now >= deadline:
                    raise SandboxError(
                        TIMEOUT,
                        f"the sandbox did not answer within {limits.wall_ms} ms",
                        {"wall_ms": limits.wall_ms},
                    )
                timeout = deadline - now
                if cancel is not None:
                    timeout = min(timeout, _CANCEL_POLL_S)
                fds = [channel.stdout, channel.wake_r] if pending else [channel.stdout]
                readable = _select(fds, timeout)
                if channel.wake_r in readable:
                    self._deliver_fetches(channel, call_id, pending, deadline)
                if channel.stdout not in readable:
                    continue
                reply = frames.read(channel.stdout, pending)
                kind = reply.get("type")
                if kind == "log":
                    logger.info(
                        "sandbox worker %s: %s %s",
                        channel.proc.pid,
                        reply.get("message"),
                        reply.get("detail") or "",
                    )
                elif kind == "fetch" and reply.get("id") == call_id:
                    pending[int(reply["fetch_id"])] = self._start_fetch(
                        channel, reply, egress, limits, deadline
                    )
                elif kind == "result" and reply.get("id") == call_id:
                    answer = reply
                    break
                elif kind == "error" and reply.get("id") == call_id:
                    # A classified failure the runner reported: the channel itself is fine.
                    error_class = _ZygoteLost if reply.get("zygote_lost") else SandboxError
                    answer = error_class.from_dict(dict(reply.get("error") or {}))
                    answer.usage = {"cpu_ms": _cpu_ms(reply)}
                    break
                else:
                    raise ProtocolError(f"unexpected {kind!r} frame for call {call_id}")
        except (PeerClosed, BrokenPipeError, ConnectionResetError) as exc:
            # The other end is gone, whether reading or writing to it found out (EPIPE): a
            # zygote's worker says how it died.
            if isinstance(channel, _Zygote):
                raise self._zygote_lost(channel) from exc
            self._discard(channel)
            raise SandboxError(SANDBOX_CRASH, f"the sandbox worker failed: {exc}") from exc
        except SandboxError:
            self._discard(channel)  # a timeout or cancel: the call is still running in there
            raise
        except _WriteStalled as exc:
            self._discard(channel)
            raise SandboxError(
                TIMEOUT,
                f"the sandbox did not read its request within {limits.wall_ms} ms",
                {"wall_ms": limits.wall_ms},
            ) from exc
        except ProtocolError as exc:
            # A frame that breaks the rules (frames.py): the sender is compromised, never reused.
            self._discard(channel)
            raise frames.failure(exc) from exc
        except Exception as exc:
            # A broken frame, a dead pipe, or a bug on this side: nobody knows what state the
            # other end is in, so it is killed, never handed to the next call.
            self._discard(channel)
            raise SandboxError(
                SANDBOX_CRASH, f"the sandbox exchange failed: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            self._discard(channel)
            raise
        finally:
            for future in pending.values():
                future.cancel()
        if isinstance(answer, SandboxError):
            raise answer
        return answer

    def _discard(self, channel: Any) -> None:
        """Kill what an exchange touched: the zygote on its own channel, else the whole worker."""
        if isinstance(channel, _Zygote):
            self._kill_zygote(channel)
        else:
            self._replace(channel)

    def _send_quietly(self, channel: Any, frame: dict[str, Any]) -> None:
        try:
            _write_all(channel.stdin, encode_frame(frame), time.monotonic() + 0.05)
        except (OSError, _WriteStalled):
            return  # it is being killed anyway; the frame was a courtesy

    def _start_fetch(
        self,
        worker: Any,
        reply: dict[str, Any],
        egress: EgressPolicy | None,
        limits: Limits,
        deadline: float,
    ) -> Future[dict[str, Any]]:
        policy = egress or EgressPolicy()
        request = dict(reply.get("request") or {})
        budget_s = max(0.0, min(limits.fetch_timeout_ms / 1000, deadline - time.monotonic() - 0.05))
        future = self._fetches.submit(request, policy=policy, timeout_s=budget_s, limits=limits)
        wake_w = worker.wake_w

        def wake(_: Future[dict[str, Any]]) -> None:
            try:
                os.write(wake_w, b"x")
            except OSError:
                return  # the channel was closed; nobody waits for this fetch any more

        future.add_done_callback(wake)
        return future

    def _deliver_fetches(
        self, worker: Any, call_id: int, pending: dict[int, Future[dict[str, Any]]], deadline: float
    ) -> None:
        try:
            os.read(worker.wake_r, 4096)
        except BlockingIOError:
            pass  # a wake-up byte already consumed by an earlier pass
        for fetch_id, future in list(pending.items()):
            if future.done():
                del pending[fetch_id]
                result = future.result()
                payload = encode_frame(
                    {"type": "fetch-result", "id": call_id, "fetch_id": fetch_id, "result": result}
                )
                _write_all(worker.stdin, payload, deadline)

    # --- zygotes on their own channels (native runner) -------------------------------------
    def _forget_zygote(self, zygote: _Zygote) -> None:
        """Under the lock: the zygote is dead to the pool (its worker may still have to reap it)."""
        zygote.dead = True
        if zygote.worker.loaded.get(zygote.key) is zygote:
            del zygote.worker.loaded[zygote.key]
        group = self._zygotes.get(zygote.key, [])
        if zygote in group:
            group.remove(zygote)
            if not group:
                del self._zygotes[zygote.key]
        self._lock.notify_all()

    def _kill_zygote(self, zygote: _Zygote) -> None:
        """Kill a zygote: forget it, drop its channel, and have its worker kill and reap it now."""
        with self._lock:
            if zygote.dead:
                return
            self._forget_zygote(zygote)
            worker = zygote.worker
        if not zygote.busy:
            zygote.close()  # a busy one is closed by its owner when it lets it go
        self._evict_on(worker, [zygote.key])

    def _evict_on(self, worker: _Worker, keys: list[str]) -> None:
        """Have a worker kill and reap zygotes; queued for its next load if it stays busy."""
        if not self._checkout_this(worker, time.monotonic() + 2.0):
            worker.pending_evict.extend(keys)
            return
        try:
            keys = worker.pending_evict + keys
            worker.pending_evict = []
            self._exchange(
                worker, {"type": "evict", "evict": keys}, limits=_CONTROL_LIMITS, cancel=None, egress=None
            )
        except SandboxError as exc:
            logger.warning("sandbox worker %s could not evict zygotes: %s", worker.proc.pid, exc)
        finally:
            self._checkin(worker)

    def _zygote_lost(self, zygote: _Zygote) -> SandboxError:
        """The zygote's channel closed in an exchange: it died. Its worker says how (and reaps it)."""
        with self._lock:
            was_alive = not zygote.dead
            self._forget_zygote(zygote)
        worker = zygote.worker
        if was_alive and self._checkout_this(worker, time.monotonic() + 2.0):
            try:
                self._exchange(
                    worker,
                    {"type": "reap", "key": zygote.key},
                    limits=_CONTROL_LIMITS,
                    cancel=None,
                    egress=None,
                )
            except SandboxError as exc:
                # The worker reports the kernel's CPU figure (rusage) of the zygote's whole life.
                exc.usage = {"cpu_ms": max(0, _cpu_ms(exc.usage) - zygote.metered_ms)}
                return exc
            finally:
                self._checkin(worker)
        elif was_alive:
            worker.pending_evict.append(zygote.key)
        return _ZygoteLost(SANDBOX_CRASH, "the bundle's zygote died")

    def _release_zygote(self, zygote: _Zygote) -> None:
        with self._lock:
            zygote.busy = False
            zygote.last_used = time.monotonic()
            if not zygote.dead:
                self._lock.notify_all()
                return
        zygote.close()

    def _acquire(self, key: str, deadline: float) -> _Zygote | _Worker:
        """A warm idle zygote of `key` (now busy), or a worker (control channel taken) to load it on."""
        with self._lock:
            while True:
                if self._closed:
                    raise SandboxError(SANDBOX_CRASH, "the sandbox pool is shut down")
                for zygote in reversed(self._zygotes.get(key, [])):
                    if not zygote.busy:
                        zygote.busy = True
                        zygote.worker.loaded.move_to_end(key)
                        return zygote
                # One zygote per key per worker: load on an idle worker that lacks it, the emptiest.
                free = [worker for worker in self._idle if key not in worker.loaded]
                if free:
                    worker = min(free, key=lambda candidate: len(candidate.loaded))
                    self._idle.remove(worker)
                    return worker
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._lock.wait(remaining):
                    if deadline - time.monotonic() <= 0:
                        raise SandboxError(TIMEOUT, "no sandbox zygote became free within the wall limit")

    def _start_load(
        self, worker: _Worker, key: str, frame: dict[str, Any], limits: Limits, cancel: threading.Event | None
    ) -> tuple[_Zygote, int, float]:
        """On a worker whose control channel we hold: fork the key's zygote and take its channel."""
        evict = worker.pending_evict
        worker.pending_evict = []
        with self._lock:
            idle = [zygote for zygote in worker.loaded.values() if not zygote.busy]
            while len(worker.loaded) >= self.config.zygotes_per_worker and idle:
                victim = idle.pop(0)  # least recently used first
                self._forget_zygote(victim)
                victim.close()
                evict.append(victim.key)
        deadline = time.monotonic() + (limits.wall_ms + self.config.grace_ms) / 1000
        reply = self._exchange(
            worker,
            {**frame, "type": "load", "key": key, "evict": evict, "limits": _limits_dict(limits)},
            limits=limits,
            cancel=cancel,
            egress=None,
        )
        try:
            assert worker.sock is not None  # noqa: S101 - channel mode has the socket
            worker.sock.settimeout(5.0)
            _, fds, _, _ = socket.recv_fds(worker.sock, 1, 2)
        except OSError as exc:
            self._replace(worker)
            raise SandboxError(SANDBOX_CRASH, f"the sandbox worker sent no zygote channel: {exc}") from exc
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            self._replace(worker)
            raise SandboxError(SANDBOX_CRASH, "the sandbox worker sent a malformed zygote channel")
        zygote = _Zygote(worker, key, int(reply["pid"]), fds[0], fds[1])
        with self._lock:
            worker.loaded[key] = zygote
            self._zygotes.setdefault(key, []).append(zygote)
        return zygote, int(reply["id"]), deadline

    def _zygote_for(
        self,
        *,
        key: str,
        frame: dict[str, Any],
        limits: Limits,
        cancel: threading.Event | None,
    ) -> tuple[_Zygote, int | None]:
        """A busy (ours) zygote of `key`, loaded first if no warm one is free, and the load's CPU ms.

        The CPU is None when a warm zygote was free (no load ran for this call).
        """
        taken = self._acquire(key, time.monotonic() + limits.wall_ms / 1000)
        if isinstance(taken, _Zygote):
            return taken, None
        try:
            zygote, load_id, deadline = self._start_load(taken, key, frame, limits, cancel)
        finally:
            self._checkin(taken)
        try:
            loaded = self._serve(
                zygote,
                load_id,
                None,
                request="load",
                limits=limits,
                cancel=cancel,
                egress=None,
                deadline=deadline,
            )
        except BaseException:
            self._kill_zygote(zygote)
            self._release_zygote(zygote)
            raise
        load_cpu_ms = _cpu_ms(loaded)
        zygote.metered_ms += load_cpu_ms
        return zygote, load_cpu_ms

    # --- memory (finding: resident memory nobody limits) ----------------------------------
    def _sweep_loop(self) -> None:
        # The sweeper outlives a bad pass (a zygote gone mid-measure…); said in the log once per streak.
        backoff = max(self.config.memory_sweep_s, 1.0)
        outage = Outage("sandbox memory sweep", logger=logger, max_delay_s=backoff)
        loop_forever(
            self.sweep_memory, outage=outage, interval_s=self.config.memory_sweep_s, stop=self._sweeper_stop
        )

    def sweep_memory(self) -> list[str]:
        """Measure idle zygotes' private resident memory and reap those over a bound; the keys reaped.

        Bounds: a zygote above `zygote_resident_mb`; an organization above `organization_memory_mb`
        (its least recently used idle zygotes); the pool above `memory_budget_mb` (the least
        recently used idle zygotes of organizations above their fair share of it, so an
        organization within its share keeps its zygotes). Busy zygotes count with their last
        figure and are never reaped mid-call: RLIMIT_AS and the arena cap bound a call.
        """
        mib = 2**20
        now = time.monotonic()
        with self._lock:
            zygotes = [zygote for group in self._zygotes.values() for zygote in group]
        for zygote in zygotes:
            # A zygote puts its heap back just after it answers: measure it once it settled.
            if not zygote.busy and now - zygote.last_used >= 0.02:
                resident = _private_resident_bytes(zygote.proc.pid)
                if resident is not None:
                    zygote.resident = resident
        victims: list[_Zygote] = []
        with self._lock:
            live = [zygote for group in self._zygotes.values() for zygote in group if not zygote.dead]
            by_org: dict[str, int] = {}
            for zygote in live:
                by_org[zygote.organization] = by_org.get(zygote.organization, 0) + zygote.resident
            total = sum(by_org.values())
            idle = sorted((zygote for zygote in live if not zygote.busy), key=lambda zygote: zygote.last_used)

            def reap(zygote: _Zygote) -> None:
                nonlocal total
                victims.append(zygote)
                by_org[zygote.organization] -= zygote.resident
                total -= zygote.resident
                self._forget_zygote(zygote)

            for zygote in idle:
                if zygote.resident > self.config.zygote_resident_mb * mib:
                    reap(zygote)
            for zygote in idle:
                if not zygote.dead and by_org[zygote.organization] > self.config.organization_memory_mb * mib:
                    reap(zygote)
            if total > self.config.memory_budget_mb * mib:
                share = self.config.memory_budget_mb * mib / max(1, len([o for o, b in by_org.items() if b]))
                for zygote in idle:
                    if total <= self.config.memory_budget_mb * mib:
                        break
                    if not zygote.dead and by_org[zygote.organization] > share:
                        reap(zygote)
        by_worker: dict[_Worker, list[str]] = {}
        for zygote in victims:
            logger.info(
                "sandbox zygote %s of %s reaped: %d MB resident",
                zygote.proc.pid,
                zygote.organization,
                zygote.resident // mib,
            )
            zygote.close()
            by_worker.setdefault(zygote.worker, []).append(zygote.key)
        for worker, keys in by_worker.items():
            self._evict_on(worker, keys)
        return [zygote.key for zygote in victims]

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
        """Evaluate a bundle in a throw-away child (a throw-away zygote) and return its manifest."""
        worker = self._checkout(None, time.monotonic() + limits.wall_ms / 1000)
        # "warm": False: a manifest needs no lazy globals evaluated ahead of calls (Intl costs ~0.2 s).
        frame = {
            "script": script,
            "env": env,
            "filename": filename,
            "limits": _limits_dict(limits),
            "warm": False,
        }
        if not worker.channels:
            try:
                reply = self._exchange(
                    worker, {**frame, "type": "introspect"}, limits=limits, cancel=cancel, egress=None
                )
            finally:
                self._checkin(worker)
            # The introspection's CPU travels with the manifest for api.introspect_metered.
            return {**reply["manifest"], USAGE_KEY: {"cpu_ms": _cpu_ms(reply)}}
        # Bundle code never runs on a worker's own channel: a hostile bundle breaks only this zygote.
        try:
            zygote, load_id, deadline = self._start_load(
                worker, f"{INTROSPECT_KEY_PREFIX}{uuid.uuid4().hex}", frame, limits, cancel
            )
        finally:
            self._checkin(worker)
        try:
            loaded = self._serve(
                zygote,
                load_id,
                None,
                request="load",
                limits=limits,
                cancel=cancel,
                egress=None,
                deadline=deadline,
            )
            reply = self._exchange(zygote, {"type": "introspect"}, limits=limits, cancel=cancel, egress=None)
        finally:
            self._kill_zygote(zygote)
            self._release_zygote(zygote)
        # The load's CPU travels with the manifest for api.introspect_metered, which takes it out.
        return {**reply["manifest"], USAGE_KEY: {"cpu_ms": _cpu_ms(loaded)}}

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
        call = {
            "type": "invoke",
            "key": key,
            "agent": agent,
            "tool": tool,
            "input": input,
            "context": context,
            "limits": _limits_dict(limits),
        }
        if not self._zygote_channels:
            return self._invoke_on_worker(
                key=key,
                script=script,
                env=env,
                filename=filename,
                call=call,
                limits=limits,
                egress=egress,
                cancel=cancel,
            )
        load = {"script": script, "env": env, "filename": filename}
        zygote, load_cpu_ms = self._zygote_for(key=key, frame=load, limits=limits, cancel=cancel)
        try:
            reply = self._exchange(zygote, call, limits=limits, cancel=cancel, egress=egress)
        except SandboxError as exc:
            exc.usage = _with_load_cpu(exc.usage, load_cpu_ms)
            raise
        finally:
            self._release_zygote(zygote)
        zygote.metered_ms += _cpu_ms(reply)
        return _reply_with_load_cpu(reply, load_cpu_ms)

    def _invoke_on_worker(
        self,
        *,
        key: str,
        script: str,
        env: dict[str, str],
        filename: str,
        call: dict[str, Any],
        limits: Limits,
        egress: EgressPolicy | None,
        cancel: threading.Event | None,
    ) -> dict[str, Any]:
        """Relay mode (the Python runner, the Docker backend): load and invoke over the worker's own stdio."""
        worker = self._checkout(key, time.monotonic() + limits.wall_ms / 1000)
        load_cpu_ms: int | None = None
        try:
            if key not in worker.loaded:
                evict: list[str] = []
                while len(worker.loaded) >= self.config.zygotes_per_worker:
                    evict.append(worker.loaded.popitem(last=False)[0])
                loaded = self._exchange(
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
                # The bundle's top-level code ran for this call: its CPU is this call's too.
                load_cpu_ms = _cpu_ms(loaded)
            else:
                worker.loaded.move_to_end(key)
            try:
                reply = self._exchange(worker, call, limits=limits, cancel=cancel, egress=egress)
            except _ZygoteLost:
                # The bundle's zygote died (CPU backstop, crash): the next call loads it again.
                worker.loaded.pop(key, None)
                raise
        except SandboxError as exc:
            exc.usage = _with_load_cpu(exc.usage, load_cpu_ms)
            raise
        finally:
            self._checkin(worker)
        return _reply_with_load_cpu(reply, load_cpu_ms)

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

        With `key` (native runner, probe "arena"): the restore figures of that key's zygote.
        """
        limits = limits or Limits(wall_ms=10_000)
        frame = {"type": "probe", "probe": name, "args": args or {}, "limits": _limits_dict(limits)}
        if key is not None and self._zygote_channels:
            with self._lock:
                idle = [zygote for zygote in self._zygotes.get(key, []) if not zygote.busy]
                if not idle:
                    raise SandboxError(SANDBOX_CRASH, f"no idle zygote of {key!r}")
                zygote = idle[-1]
                zygote.busy = True
            try:
                return self._exchange(
                    zygote, {**frame, "key": key}, limits=limits, cancel=cancel, egress=egress
                )["probe"]
            finally:
                self._release_zygote(zygote)
        worker = self._checkout(key, time.monotonic() + limits.wall_ms / 1000)
        if key is not None:
            frame["key"] = key
        try:
            reply = self._exchange(worker, frame, limits=limits, cancel=cancel, egress=egress)
        finally:
            self._checkin(worker)
        return reply["probe"]


# The worker's own control frames (load's fork, evict, reap) answer within microseconds.
_CONTROL_LIMITS = Limits(wall_ms=5000)


class _ZygoteLost(SandboxError):
    """A classified error after which the key's zygote is gone (the next call loads it again)."""


class _WriteStalled(Exception):
    """The other end did not read a frame before the deadline."""


@functools.lru_cache(maxsize=256)
def _limits_dict(limits: Limits) -> dict[str, int]:
    """`limits.to_dict()`, once per distinct (frozen) limits: asdict costs ~20 us, a call ~300 us.

    The dict is shared between frames: it is only ever encoded, never changed.
    """
    return limits.to_dict()


# Key under which `introspect` returns the introspection's usage beside the manifest.
USAGE_KEY = "__usage__"


def _cpu_ms(frame: dict[str, Any]) -> int:
    """The CPU milliseconds a runner frame (or a usage dict) reports; 0 when absent or malformed."""
    usage = frame.get("usage") if "usage" in frame else frame
    value = usage.get("cpu_ms") if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return 0
    return int(min(value, 10**12))


def _with_load_cpu(usage: dict[str, Any], load_cpu_ms: int | None) -> dict[str, Any]:
    """A call's usage with the CPU of the bundle load it caused (None: no load ran for it)."""
    if load_cpu_ms is None:
        return usage
    return {**usage, "cpu_ms": _cpu_ms(usage) + load_cpu_ms, "load_cpu_ms": load_cpu_ms}


def _reply_with_load_cpu(reply: dict[str, Any], load_cpu_ms: int | None) -> dict[str, Any]:
    if load_cpu_ms is None:
        return reply
    return {**reply, "usage": _with_load_cpu(dict(reply.get("usage") or {}), load_cpu_ms)}


def _write_all(fd: int, payload: bytes, deadline: float) -> None:
    """Write all of `payload`; on a non-blocking fd, wait for room until `deadline` (else _WriteStalled)."""
    import select

    view = memoryview(payload)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise _WriteStalled(f"{len(view)} bytes unread at the deadline") from None


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
