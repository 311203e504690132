"""Sandbox worker entrypoint (`python -m execution.sandbox.runner`): jail, zygotes, one child per call.

Process tree inside one worker, and why:

    worker (base zygote: runtime modules evaluated once, never any bundle)
      ├── key zygote for (org, bundle version, env digest) K1: fork of the base that
      │     evaluated bundle K1 once; stays idle and forks
      │       └── one call child per `invoke`: runs the tool, answers, exits
      └── throw-away child per `introspect` (and per test probe)

Each call runs in a fresh copy-on-write fork of a context that already evaluated zod
and the bundle, so it costs a fork instead of ~14 ms of re-evaluation, and nothing a
call does (globals, prototypes, timers, heap) survives it. A key zygote only ever
evaluated its own bundle version with its own organization's environment, and keys
carry the organization, so no JS state crosses organizations or versions: the base
that every key zygote is forked from never ran bundle code. Dedicating whole workers
to keys was rejected: with two cores' worth of workers it thrashes as soon as a third
key is hot, and a fresh worker costs a Python start plus the runtime evaluation.

The call child talks to the host directly over the worker's stdin/stdout (fds 0/1,
inherited through both forks) while its parents block on a status pipe, so results
and fetches are not relayed. It adds a stricter seccomp filter (no clone, no file
opens) and per-call CPU/address-space rlimits before touching untrusted code. A call
that hits a limit is discarded with its child; the zygotes are never touched by a call.

Speed (measured on the 2-vCPU development VM; `benchmarks/sandbox_floor.py` prints these):
a key zygote keeps one *spare* call child forked ahead of time. The spare attaches its
seccomp filter and takes the copy-on-write faults of the Python side of a call
(`Engine.warm_up`, no JS) while it waits; the call's frame then only adds the rlimits and
the call itself (~1.0 ms, ~235 page faults for weather.getWeather). The next spare is
forked while the current call runs. What remains per call is CPU, not latency: fork and
exit of a zygote with ~16 MB of private memory cost ~1.7 ms of CPU here (page tables:
~35 us per MB), each copy-on-write fault ~2.5 us, and a whole call ~4.5 ms of CPU over
worker, zygote and child. Fork-per-call from this zygote is therefore bound to a few
hundred calls/s on two cores; the way past it is a smaller zygote (a runner without
Python), not a faster one. That runner exists: execution/sandbox/native/ (same protocol,
process tree and jail; the pool's default, this module is its fallback).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import os
import resource
import signal
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NoReturn

from execution.sandbox import jail
from execution.sandbox.errors import CPU_LIMIT, MEMORY_LIMIT, SANDBOX_CRASH, SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.protocol import PeerClosed, ProtocolError, read_frame, wait_readable, write_frame

try:
    from execution.sandbox.engine import Engine
except ImportError as _engine_import_error:  # reported in the ready frame and on every call
    Engine = None  # type: ignore[assignment,misc]
    _ENGINE_IMPORT_ERROR: str | None = f"{type(_engine_import_error).__name__}: {_engine_import_error}"
else:
    _ENGINE_IMPORT_ERROR = None

STDIN = 0
STDOUT = 1


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _child_cpu_ms(pid: int) -> int:
    """A live child's CPU time so far, from its kernel CPU clock (MAKE_PROCESS_CPUCLOCK(pid, SCHED))."""
    try:
        return _ms(time.clock_gettime(((~pid) << 3) | 2))
    except OSError:
        return 0


def _exit(code: int) -> NoReturn:
    # No interpreter teardown in forked children: atexit handlers and buffered
    # streams belong to the process they were forked from.
    os._exit(code)


class FdHostChannel:
    """HostChannel for the engine: fetches go to the host as frames over fds 0/1."""

    def __init__(self, call_id: Any) -> None:
        self._call_id = call_id
        self._next_fetch = 0

    def start_fetch(self, request: dict[str, Any]) -> int:
        """Send a `fetch` frame and return its id."""
        self._next_fetch += 1
        write_frame(
            STDOUT, {"type": "fetch", "id": self._call_id, "fetch_id": self._next_fetch, "request": request}
        )
        return self._next_fetch

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Wait up to `timeout` s for the first fetch result, then drain what is already there."""
        done: list[tuple[int, dict[str, Any]]] = []
        wait: float = max(timeout, 0.0)
        while wait_readable(STDIN, wait):
            try:
                frame = read_frame(STDIN)
            except PeerClosed:
                _exit(0)  # the host is gone; nobody is left to answer
            if frame["type"] == "cancel":
                raise SandboxError("cancelled", "the call was cancelled")
            if frame["type"] == "fetch-result" and frame.get("id") == self._call_id:
                done.append((int(frame["fetch_id"]), frame["result"]))
            wait = 0.0
        return done


@dataclass
class _Spare:
    pid: int
    go_w: int
    done_r: int


@dataclass
class _Zygote:
    pid: int
    command_fd: int
    status_fd: int


def _classify_exit(status: int, *, what: str) -> SandboxError:
    """Turn a child's wait status (it died before answering) into a classified error."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGPROF):
            name = signal.Signals(sig).name
            return SandboxError(CPU_LIMIT, f"{what} exceeded its CPU time limit", {"signal": name})
        return SandboxError(
            SANDBOX_CRASH, f"{what} was killed by signal {signal.Signals(sig).name}", {"signal": sig}
        )
    return SandboxError(
        SANDBOX_CRASH,
        f"{what} exited with status {os.WEXITSTATUS(status)} without answering",
        {"exit_code": os.WEXITSTATUS(status)},
    )


# glibc only; another C library simply keeps its free memory.
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)


def _compact_for_forking() -> None:
    """Return free malloc memory to the kernel so that forks and exits have fewer pages to map.

    Fork copies one page-table entry per resident page of the private writable mappings, and
    exit frees them again: ~35 us per MB on this machine, the largest fixed cost of a call.
    (Collapsing the heap into 2 MB pages was measured too: the zygote's own writes between
    forks split them again while a child shares them, so it gained nothing after one call.)
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _close_all_but(keep: set[int]) -> None:
    # closerange is one close_range(2) syscall on Linux, cheap enough per call.
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 65536)


class Runner:
    """The frame loop of one worker process."""

    def __init__(self, *, config: jail.JailConfig, probes: bool) -> None:
        self.config = config
        self.probes = probes
        self.zygotes: OrderedDict[str, _Zygote] = OrderedDict()
        self.engine: Any = None
        self.vsize = 0  # measured after each state change that children are forked from
        self.answered: list[int] = []  # call children that answered and may still be exiting
        # Pipes a zygote holds to its worker; a call child closes them first thing.
        self.own_fds: list[int] = []
        self.spare: _Spare | None = None  # a forked, jailed call child waiting for its frame
        self.child_fds: list[int] = []  # our ends of call children's pipes

    def _settle(self) -> None:
        """Prepare a state that children will be forked from."""
        # Frozen objects are skipped by the collector, so a child's GC does not touch
        # (and copy) every page it shares with its parent.
        gc.collect()
        gc.freeze()
        _compact_for_forking()
        self.vsize = jail.current_vsize()

    def _private_fds(self) -> list[int]:
        """Runner pipes a fresh child must not keep (the other zygotes', its parent's)."""
        fds = list(self.own_fds) + list(self.child_fds)
        for zygote in self.zygotes.values():
            fds += [zygote.command_fd, zygote.status_fd]
        return fds

    # --- children -------------------------------------------------------------------
    def _fork_spare(self, *, warm: bool = False) -> _Spare:
        """Fork a call child that jails itself and then waits for its frame on a private pipe.

        A key zygote keeps one spare ready so that the fork (~1 ms here, it scales with the
        zygote's resident pages) and the seccomp attach happen while the previous call runs or
        the worker is idle, not on the next call's path. The spare holds nothing of any call
        until its frame arrives: it is a plain copy of the zygote.
        """
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(done_r)
            self._spare_main(go_r, done_w, warm=warm)
        os.close(go_r)
        os.close(done_w)
        self.child_fds += [go_w, done_r]
        return _Spare(pid, go_w, done_r)

    def _take_spare(self) -> _Spare:
        spare = self.spare or self._fork_spare()
        self.spare = None
        return spare

    def _run_in_child(self, frame: dict[str, Any], *, prefork: bool = False) -> None:
        """Hand `frame` to a fresh call child, which answers the host itself; wait until it has.

        The child writes one byte to its `done` pipe after its answer: from then on it no
        longer reads stdin, so the caller may serve the next frame while the child tears down
        (its exit costs ~0.7 ms here). No byte means it died first: its exit status is then
        turned into a classified error. With `prefork`, the next call's child is forked while
        this one runs.
        """
        self._reap_answered()
        child = self._take_spare()
        try:
            write_frame(child.go_w, frame)
        except OSError:
            pass  # the spare died before its frame: reported below from its exit status
        self._close_child_fd(child.go_w)
        if prefork:
            self.spare = self._fork_spare(warm=True)
        try:
            answered = os.read(child.done_r, 1) == b"1"
        finally:
            self._close_child_fd(child.done_r)
        if answered:
            self.answered.append(child.pid)
            return
        _, status, rusage = os.wait4(child.pid, 0)
        err = _classify_exit(status, what="the call")
        # A call child runs one frame: its whole rusage is that call's CPU (metered).
        usage = {"cpu_ms": _ms(rusage.ru_utime + rusage.ru_stime)}
        write_frame(STDOUT, {"type": "error", "id": frame.get("id"), "error": err.to_dict(), "usage": usage})

    def _close_child_fd(self, fd: int) -> None:
        self.child_fds.remove(fd)
        os.close(fd)

    def _reap_answered(self) -> None:
        """Collect call children that answered and have exited since."""
        still_running = []
        for pid in self.answered:
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                still_running.append(pid)
        self.answered = still_running

    def _spare_main(self, go_r: int, done_w: int, *, warm: bool) -> NoReturn:
        frame: dict[str, Any] = {}
        try:
            jail.die_with_parent()
            if self.config.layers.close_fds:
                _close_all_but({go_r, done_w})
            else:
                for fd in self._private_fds():
                    os.close(fd)
            # The filter does not depend on the call: attach it before the frame arrives.
            # The rlimits do (CPU, memory), so they follow the frame.
            jail.apply_call_child_jail(
                dataclasses.replace(self.config.layers, rlimits=False), cpu_ms=0, memory_mb=0, vsize=0
            )
            if warm:
                # Copy-on-write faults of the Python side of a call, taken while idle.
                self.engine.warm_up()
            try:
                frame = read_frame(go_r)
            except ProtocolError:
                _exit(0)  # the zygote dropped this spare (eviction or exit)
            os.close(go_r)
            limits = Limits.from_dict(frame.get("limits") or {})
            jail.apply_call_child_jail(
                dataclasses.replace(self.config.layers, seccomp=False),
                cpu_ms=limits.cpu_ms,
                memory_mb=limits.memory_mb,
                vsize=self.vsize,
            )
            answer = {"type": "result", "id": frame.get("id"), **self._body(frame, limits)}
        except SandboxError as exc:
            answer = {"type": "error", "id": frame.get("id"), "error": exc.to_dict()}
        except MemoryError:
            answer = {
                "type": "error",
                "id": frame.get("id"),
                "error": SandboxError(MEMORY_LIMIT, "the call ran out of memory").to_dict(),
            }
        except Exception as exc:  # noqa: BLE001 - reported to the host as a classified crash
            answer = {
                "type": "error",
                "id": frame.get("id"),
                "error": SandboxError(
                    SANDBOX_CRASH,
                    f"runner failure: {type(exc).__name__}: {exc}",
                    {"traceback": traceback.format_exc(limit=5)},
                ).to_dict(),
            }
        try:
            write_frame(STDOUT, answer)
        except (OSError, ValueError):
            _exit(3)  # unserialisable or host gone: the parent reports a crash
        os.write(done_w, b"1")
        _exit(0)

    def _body(self, frame: dict[str, Any], limits: Limits) -> dict[str, Any]:
        """Do what a call child's frame asks (invoke, introspect or a test probe)."""
        kind = frame["type"]
        if kind == "invoke":
            result: dict[str, Any] = self.engine.invoke(
                agent=frame["agent"],
                tool=frame["tool"],
                input=frame.get("input"),
                context=dict(frame.get("context") or {}),
                limits=limits,
                host=FdHostChannel(frame.get("id")),
            )
            return result
        if kind == "introspect":
            started = time.process_time()
            self.engine.load(
                frame["script"],
                env=dict(frame.get("env") or {}),
                limits=limits,
                filename=str(frame.get("filename") or "bundle.js"),
                warm=False,
            )
            manifest = self.engine.introspect()
            # Evaluating the bundle is metered to the uploading organization.
            return {"ok": True, "manifest": manifest, "usage": {"cpu_ms": _ms(time.process_time() - started)}}
        if kind == "probe" and self.probes:
            return {
                "ok": True,
                "probe": jail.run_probe(
                    str(frame["probe"]), dict(frame.get("args") or {}), host=FdHostChannel(frame.get("id"))
                ),
            }
        raise SandboxError(SANDBOX_CRASH, f"a call child cannot run a {kind!r} frame")

    # --- frame handlers -------------------------------------------------------------
    def handle_load(self, frame: dict[str, Any]) -> None:
        """Evaluate a bundle version into a key zygote (or reuse the existing one)."""
        for key in frame.get("evict", []):
            self._evict(str(key))
        key = str(frame["key"])
        if key in self.zygotes:
            self.zygotes.move_to_end(key)
            write_frame(STDOUT, {"type": "result", "id": frame.get("id"), "ok": True, "cached": True})
            return
        limits = Limits.from_dict(frame.get("limits") or {})
        command_r, command_w = os.pipe()
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(command_w)
            os.close(status_r)
            self._zygote_main(frame, limits, command_r, status_w)
        os.close(command_r)
        os.close(status_w)
        zygote = _Zygote(pid, command_w, status_r)
        try:
            reply = read_frame(status_r)
        except ProtocolError:
            reply = None
        if reply is None or not reply.get("ok"):
            self._reap(zygote)
            # The kernel's account of the failed load (rusage of the reaped zygote) is metered too.
            _, status, rusage = os.wait4(pid, 0)
            if reply is None:
                error = _classify_exit(status, what="loading the bundle").to_dict()
            else:
                error = reply["error"]
            cpu_ms = _ms(rusage.ru_utime + rusage.ru_stime)
            write_frame(
                STDOUT, {"type": "error", "id": frame.get("id"), "error": error, "usage": {"cpu_ms": cpu_ms}}
            )
            return
        self.zygotes[key] = zygote
        # The zygote has only loaded since its fork: its CPU clock is the load's cost.
        usage = {"cpu_ms": _child_cpu_ms(pid)}
        reply = {"type": "result", "id": frame.get("id"), "ok": True, "cached": False, "usage": usage}
        write_frame(STDOUT, reply)

    def _zygote_main(self, frame: dict[str, Any], limits: Limits, command_r: int, status_w: int) -> NoReturn:
        try:
            jail.die_with_parent()
            for fd in self._private_fds():
                os.close(fd)
            if self.config.layers.close_fds:
                _close_all_but({command_r, status_w})
            self.zygotes.clear()
            self.answered = []
            self.spare = None
            self.child_fds = []
            self.own_fds = [command_r, status_w]
            # Top-level bundle code runs here once; bound its CPU like a call's.
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            if self.config.layers.rlimits:
                budget = -(-limits.cpu_ms // 1000) + 1
                resource.setrlimit(resource.RLIMIT_CPU, (min(budget, hard), hard))
            self.engine.load(
                frame["script"],
                env=dict(frame.get("env") or {}),
                limits=limits,
                filename=str(frame.get("filename") or "bundle.js"),
            )
            if self.config.layers.rlimits:
                resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
            self._settle()
        except SandboxError as exc:
            write_frame(status_w, {"type": "error", "ok": False, "error": exc.to_dict()})
            _exit(0)
        except Exception as exc:  # noqa: BLE001 - reported to the host as a classified crash
            write_frame(
                status_w,
                {
                    "type": "error",
                    "ok": False,
                    "error": SandboxError(
                        SANDBOX_CRASH, f"runner failure while loading: {type(exc).__name__}: {exc}"
                    ).to_dict(),
                },
            )
            _exit(0)
        write_frame(status_w, {"type": "result", "ok": True})
        self.spare = self._fork_spare(warm=True)
        while True:
            try:
                command = read_frame(command_r)
            except ProtocolError:
                _exit(0)  # the worker dropped us (eviction or exit)
            self._run_invoke(command)
            write_frame(status_w, {"type": "result", "ok": True})

    def _run_invoke(self, frame: dict[str, Any]) -> None:
        self._run_in_child(frame, prefork=True)

    def handle_invoke(self, frame: dict[str, Any]) -> None:
        """Hand the call to its key zygote, which forks the call child."""
        key = str(frame.get("key"))
        zygote = self.zygotes.get(key)
        if zygote is None:
            err = SandboxError(SANDBOX_CRASH, f"bundle key {key!r} is not loaded in this worker")
            write_frame(STDOUT, {"type": "error", "id": frame.get("id"), "error": err.to_dict()})
            return
        self.zygotes.move_to_end(key)
        try:
            write_frame(zygote.command_fd, frame)
            read_frame(zygote.status_fd)
        except (OSError, ProtocolError):
            del self.zygotes[key]
            self._reap(zygote)
            _, status = os.waitpid(zygote.pid, 0)
            err = _classify_exit(status, what="the bundle's zygote")
            write_frame(STDOUT, {"type": "error", "id": frame.get("id"), "error": err.to_dict()})

    def handle_introspect(self, frame: dict[str, Any]) -> None:
        """Evaluate the bundle in a throw-away child of the base and return its manifest."""
        self._run_in_child(frame)

    def handle_probe(self, frame: dict[str, Any]) -> None:
        """Test-only: run a named jail probe in a call child."""
        self._run_in_child(frame)

    def _evict(self, key: str) -> None:
        zygote = self.zygotes.pop(key, None)
        if zygote is not None:
            self._reap(zygote)
            os.kill(zygote.pid, signal.SIGKILL)
            os.waitpid(zygote.pid, 0)

    @staticmethod
    def _reap(zygote: _Zygote) -> None:
        for fd in (zygote.command_fd, zygote.status_fd):
            try:
                os.close(fd)
            except OSError:
                continue  # already closed by an earlier failure path

    def serve(self) -> None:
        """Answer frames until the host closes stdin."""
        handlers = {
            "load": self.handle_load,
            "invoke": self.handle_invoke,
            "introspect": self.handle_introspect,
        }
        if self.probes:
            handlers["probe"] = self.handle_probe
        while True:
            try:
                frame = read_frame(STDIN)
            except PeerClosed:
                return
            kind = frame["type"]
            if kind in ("cancel", "fetch-result"):
                continue  # late frames for a call that already ended
            handler = handlers.get(kind)
            if handler is None:
                err = SandboxError(SANDBOX_CRASH, f"unknown frame type {kind!r}")
                write_frame(STDOUT, {"type": "error", "id": frame.get("id"), "error": err.to_dict()})
                continue
            if self.engine is None and kind != "probe":
                err = SandboxError(SANDBOX_CRASH, f"engine unavailable: {_ENGINE_IMPORT_ERROR}")
                write_frame(STDOUT, {"type": "error", "id": frame.get("id"), "error": err.to_dict()})
                continue
            handler(frame)


def main(argv: list[str] | None = None) -> int:
    """Jail this process, build the base zygote, serve frames on stdin/stdout."""
    parser = argparse.ArgumentParser(prog="execution.sandbox.runner")
    parser.add_argument("--jail", default=jail.JailConfig().to_json(), help="JailConfig as JSON")
    parser.add_argument("--test-probes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = jail.JailConfig.from_json(args.jail)
    # Anything the runner prints by mistake must not corrupt the frame stream.
    sys.stdout = sys.stderr
    started = time.perf_counter()
    status = jail.apply_jail(config)
    runner = Runner(config=config, probes=args.test_probes)
    engine_error = _ENGINE_IMPORT_ERROR
    if Engine is not None:
        try:
            runner.engine = Engine()
            runner._settle()
        except SandboxError as exc:
            engine_error = f"{exc.code}: {exc.message}"
    detail = {
        "layers": status,
        "engine": engine_error or "ok",
        "pid": os.getpid(),
        "startup_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    write_frame(STDOUT, {"type": "log", "level": "info", "message": "ready", "detail": detail})
    runner.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
