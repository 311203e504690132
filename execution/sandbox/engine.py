"""In-process QuickJS engine: evaluates the runtime, loads one bundle, introspects it and runs one tool call.

Used only inside sandbox worker processes. The intended life cycle (see the runner): `Engine()` once
per worker (evaluates runtime.js with zod: the expensive part), `load()` once per bundle version,
then fork a child per call that calls `invoke()` once and exits, so every call starts from the same
clean heap. The engine refuses a second `load()` or `invoke()` on one instance: without the fork, JS
state from an earlier call would be visible to the next.

Python and JavaScript only exchange JSON text through the runtime's private API object; JavaScript
never calls into Python (the wrapper forbids it under a time limit anyway), so fetches, timers and
logs are queued inside JS and serviced by the loop in `invoke()` between engine entries. Every entry
runs under QuickJS's interrupt-based time limit (process CPU time, capped by the remaining wall time),
a heap limit and a stack limit.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

# The `quickjs` package module (same wheel) starts a thread at import for quickjs.Function, and a
# process with threads must not fork; the C extension module gives the same Context without it.
import _quickjs

from execution.sandbox.errors import (
    CPU_LIMIT,
    INVALID_INPUT,
    LIMIT_CODES,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    SANDBOX_CRASH,
    STACK_OVERFLOW,
    SYNTAX_ERROR,
    TIMEOUT,
    SandboxError,
)
from execution.sandbox.limits import MIB, Limits

RUNTIME_PATH = Path(__file__).resolve().parent / "js" / "dist" / "runtime.js"

_API_FUNCTIONS = (
    "load",
    "afterLoad",
    "introspect",
    "begin",
    "poll",
    "fireTimers",
    "fetchDone",
    "fetchTimedOut",
    "finish",
    "takeOutput",
    "drainLogs",
)

# A garbage collection in a forked call child walks, and writes to, every object header of the
# zygote's heap: copy-on-write of the whole heap (~3 us per page fault here). The zygote therefore
# moves the collection threshold to this fraction of the room left below the call's memory limit,
# so a call collects only when it allocates a lot (and still well before its limit).
_GC_HEADROOM_FRACTION = 0.5


class _RuntimeProbe:
    """Cheap reads of the JSRuntime that the wrapper does not expose, verified before use.

    `Context.memory()` computes full heap statistics (~0.2 ms plus cache misses over the whole
    heap); the call needs only `malloc_size`, a field of the runtime's malloc state. The wrapper's
    object layout and the field offsets are checked against the public API once, and any mismatch
    (another wheel version) disables the probe: the engine then falls back to `memory()` and leaves
    the GC threshold alone.
    """

    # JSRuntime starts with JSMallocFunctions (5 pointers), then JSMallocState {count, size, limit}.
    _MALLOC_SIZE_OFFSET = 6 * 8
    _MALLOC_LIMIT_OFFSET = 7 * 8

    def __init__(self, ctx: Any, memory_limit: int) -> None:
        self.ok = False
        self._runtime = 0
        self._lib: Any = None
        try:
            lib = ctypes.CDLL(_quickjs.__file__)
            lib.JS_GetRuntime.restype = ctypes.c_void_p
            lib.JS_GetRuntime.argtypes = [ctypes.c_void_p]
            lib.JS_SetGCThreshold.restype = None
            lib.JS_SetGCThreshold.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            # The wrapper's object: PyObject_HEAD, then JSRuntime *, then JSContext *.
            runtime = ctypes.c_void_p.from_address(id(ctx) + 16).value
            context = ctypes.c_void_p.from_address(id(ctx) + 24).value
        except (OSError, AttributeError, ValueError):
            return
        if not runtime or not context or lib.JS_GetRuntime(context) != runtime:
            return
        self._runtime = runtime
        self._lib = lib
        limit = ctypes.c_size_t.from_address(runtime + self._MALLOC_LIMIT_OFFSET).value
        size = self._read_size()
        if limit != memory_limit or size != int(ctx.memory().get("malloc_size", -1)):
            self._runtime = 0
            return
        self.ok = True

    def _read_size(self) -> int:
        return int(ctypes.c_size_t.from_address(self._runtime + self._MALLOC_SIZE_OFFSET).value)

    def malloc_size(self) -> int:
        """Bytes the runtime has allocated now."""
        return self._read_size()

    def set_gc_threshold(self, threshold: int) -> None:
        """Run the cycle collector only once `malloc_size` exceeds `threshold`."""
        self._lib.JS_SetGCThreshold(self._runtime, threshold)


# Headroom granted after a limit error so the logs gathered so far can still be read out.
_SALVAGE_MEMORY_BYTES = 16 * MIB
_SALVAGE_SECONDS = 0.05


class HostChannel(Protocol):
    """The host side of a call: starts fetches and reports their completion."""

    def start_fetch(self, request: dict[str, Any]) -> int:
        """Start a fetch ({url, method, headers: [[k, v]], body_b64}) and return its id."""
        ...

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Return fetches completed since the last poll, waiting at most `timeout` s for the first.

        Raises SandboxError("cancelled") when the host cancelled the call.
        """
        ...


class _NoHost:
    """A HostChannel that has nothing to do (used by warm_up)."""

    def start_fetch(self, request: dict[str, Any]) -> int:
        """Never called: warm_up runs no JS."""
        raise RuntimeError("warm_up runs no JS and starts no fetch")

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Nothing is ever pending."""
        return []


class _Budget:
    """CPU and wall deadlines of one load or call, and which of them bounds the next engine entry."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cpu_start = time.process_time()
        self.wall_start = time.monotonic()
        self.cpu_deadline = self.cpu_start + limits.cpu_ms / 1000
        self.wall_deadline = self.wall_start + limits.wall_ms / 1000
        self.binding = CPU_LIMIT

    def remaining(self) -> float:
        """Seconds the next entry may run; raise the limit error when nothing is left."""
        cpu_left = self.cpu_deadline - time.process_time()
        wall_left = self.wall_deadline - time.monotonic()
        self.binding = CPU_LIMIT if cpu_left <= wall_left else TIMEOUT
        left = min(cpu_left, wall_left)
        if left <= 0:
            raise self.exceeded()
        return left

    def wall_left(self) -> float:
        """Seconds of wall time left."""
        return self.wall_deadline - time.monotonic()

    def exceeded(self) -> SandboxError:
        """The error for the limit that bound the last entry."""
        if self.binding == CPU_LIMIT:
            return SandboxError(
                CPU_LIMIT,
                f"the CPU time limit of {self.limits.cpu_ms} ms was exceeded",
                {"cpu_ms": self.limits.cpu_ms},
            )
        return SandboxError(
            TIMEOUT,
            f"the time limit of {self.limits.wall_ms} ms was exceeded",
            {"wall_ms": self.limits.wall_ms},
        )

    def usage(self) -> dict[str, int]:
        """CPU and wall milliseconds used so far."""
        return {
            "cpu_ms": round((time.process_time() - self.cpu_start) * 1000),
            "wall_ms": round((time.monotonic() - self.wall_start) * 1000),
        }


class Engine:
    """One QuickJS context with the runtime evaluated; load a bundle once, then fork per call."""

    def __init__(self) -> None:
        try:
            source = RUNTIME_PATH.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SandboxError(
                SANDBOX_CRASH, f"{RUNTIME_PATH} is missing: run `npm run build:runtime` (make setup)"
            ) from None
        self._broken = False
        self._loaded = False
        self._invoked = False
        self._ctx = _quickjs.Context()
        defaults = Limits()
        self._ctx.set_max_stack_size(defaults.stack_kb * 1024)
        self._ctx.set_memory_limit(defaults.memory_mb * MIB)
        self._ctx.set_time_limit(10.0)
        self._probe = _RuntimeProbe(self._ctx, defaults.memory_mb * MIB)
        self._ctx.eval(source)
        self._api = {name: self._ctx.eval(f"globalThis.__lightfastRuntime.{name}") for name in _API_FUNCTIONS}
        # Only the engine holds the API: bundle code must not be able to call it.
        self._ctx.eval("delete globalThis.__lightfastRuntime")
        self._ctx.gc()

    @property
    def broken(self) -> bool:
        """True after a limit error: the context must be discarded."""
        return self._broken

    # ------------------------------------------------------------------ loading

    def load(
        self,
        script: str,
        *,
        env: dict[str, str],
        filename: str = "bundle.js",
        limits: Limits | None = None,
        warm: bool = True,
    ) -> None:
        """Evaluate a transformed bundle and find its agents; raise SandboxError when it is unusable.

        With warm=False (introspection) the runtime does not evaluate the lazy globals (Intl,
        crypto.subtle) the bundle's code names ahead of calls.
        """
        if self._loaded:
            raise RuntimeError("Engine.load() runs once per engine; start a new engine for another bundle")
        self._check_usable()
        self._loaded = True
        limits = limits or Limits()
        self._apply_limits(limits)
        budget = _Budget(limits)
        args = json.dumps(
            {
                "env": {str(k): str(v) for k, v in env.items()},
                "seed": os.urandom(32).hex(),
                "limits": limits.to_dict(),
                "filename": filename,
                **({} if warm else {"warm": False}),
            }
        )
        try:
            budget_left = budget.remaining()
            self._ctx.set_time_limit(budget_left)
            try:
                bundle_function = self._ctx.eval(script)
            except _quickjs.JSException as exc:
                raise self._classify(exc, budget, during_parse=True) from None
            reply = self._call(budget, "load", bundle_function, args)
            if not reply.get("ok"):
                raise _error_from_reply(reply)
            self._run_jobs(budget)
            self._call(budget, "afterLoad")
        except SandboxError as exc:
            if exc.code in LIMIT_CODES:
                self._broken = True
            raise
        self._ctx.gc()
        self._raise_gc_threshold(limits)

    def _raise_gc_threshold(self, limits: Limits) -> None:
        """Keep call children from collecting (and so copying) the zygote's heap for small calls."""
        if not self._probe.ok:
            return
        used = self._probe.malloc_size()
        room = max(limits.memory_mb * MIB - used, 0)
        self._probe.set_gc_threshold(used + int(room * _GC_HEADROOM_FRACTION))

    def malloc_size(self) -> int:
        """Bytes the JS heap has allocated now (what the memory limit counts)."""
        if self._probe.ok:
            return self._probe.malloc_size()
        return int(self._ctx.memory()["malloc_size"])

    def introspect(self) -> dict[str, Any]:
        """Return the manifest of the loaded bundle (BUNDLES.md, without sha256/bytes)."""
        if not self._loaded:
            raise RuntimeError("Engine.introspect() needs a loaded bundle")
        self._check_usable()
        limits = Limits()
        self._apply_limits(limits)
        budget = _Budget(limits)
        try:
            reply = self._call(budget, "introspect")
        except SandboxError as exc:
            if exc.code in LIMIT_CODES:
                self._broken = True
            raise
        if not reply.get("ok"):
            raise _error_from_reply(reply)
        manifest: dict[str, Any] = reply["manifest"]
        return manifest

    # ------------------------------------------------------------------ calls

    def invoke(
        self,
        *,
        agent: str,
        tool: str,
        input: object,  # noqa: A002 - the contract's name
        context: dict[str, Any],
        limits: Limits,
        host: HostChannel,
    ) -> dict[str, Any]:
        """Run one tool call; return {ok, output|error, logs, usage}. Bundle misbehaviour never raises."""
        if not self._loaded:
            raise RuntimeError("Engine.invoke() needs a loaded bundle")
        if self._invoked:
            raise RuntimeError(
                "Engine.invoke() runs once per engine: fork from the loaded engine for each call"
            )
        self._check_usable()
        self._invoked = True
        budget = _Budget(limits)
        call = _Call(self, budget, host)
        try:
            args = _call_arguments(agent=agent, tool=tool, input=input, context=context, limits=limits)
        except SandboxError as exc:
            return call.result(ok=False, error=exc.to_dict(), logs=[])
        self._apply_limits(limits)
        if self._probe.ok:
            # The call's own limit may differ from the one the zygote loaded with.
            self._raise_gc_threshold(limits)
        try:
            return call.run(args)
        except SandboxError as exc:
            if exc.code in LIMIT_CODES:
                self._broken = True
            return call.result(ok=False, error=exc.to_dict(), logs=call.salvage_logs())

    def warm_up(self) -> None:
        """Touch the Python side of a call (argument encoding, budget, result) without entering JS.

        In a forked call child every first write to a page shared with the zygote is a
        copy-on-write fault (~2.5 us each here, a few hundred per call, most of them reference
        counts of interpreter objects). A pre-forked child calls this while it waits for its
        call, so those faults are taken before the call arrives. The JS heap is not touched:
        nothing here can leave state behind for the call.
        """
        limits = Limits()
        _call_arguments(agent="", tool="", input={"warm": [1, 2.5, "x", None]}, context={}, limits=limits)
        budget = _Budget(limits)
        budget.remaining()
        call = _Call(self, budget, _NoHost())
        json.loads(json.dumps(call.result(ok=True, output={"warm": [1, "x"]}, logs=[])))

    # ------------------------------------------------------------------ engine entries

    def _check_usable(self) -> None:
        if self._broken:
            raise RuntimeError("this engine hit a limit earlier and must be discarded")

    def _apply_limits(self, limits: Limits) -> None:
        self._ctx.set_memory_limit(limits.memory_mb * MIB)
        self._ctx.set_max_stack_size(limits.stack_kb * 1024)

    def _call(self, budget: _Budget, name: str, *args: Any) -> dict[str, Any]:
        """Call a runtime API function under the budget and parse its JSON reply."""
        text = self._call_text(budget, name, *args)
        reply: dict[str, Any] = json.loads(text)
        return reply

    def _call_text(self, budget: _Budget, name: str, *args: Any) -> str:
        self._ctx.set_time_limit(budget.remaining())
        try:
            text = self._api[name](*args)
        except _quickjs.JSException as exc:
            raise self._classify(exc, budget) from None
        if not isinstance(text, str):
            raise SandboxError(SANDBOX_CRASH, f"runtime function {name} returned {type(text).__name__}")
        return text

    def _run_jobs(self, budget: _Budget) -> None:
        """Run the promise job queue until it is empty."""
        while True:
            self._ctx.set_time_limit(budget.remaining())
            try:
                ran = self._ctx.execute_pending_job()
            except _quickjs.JSException as exc:
                raise self._classify(exc, budget) from None
            if not ran:
                return

    def _classify(
        self, exc: _quickjs.JSException, budget: _Budget, *, during_parse: bool = False
    ) -> SandboxError:
        """Turn an exception that left the engine (only engine-made errors can) into a SandboxError."""
        text = str(exc)
        first_line = text.split("\n", 1)[0][:500]
        if first_line.startswith("InternalError: interrupted"):
            return budget.exceeded()
        if "out of memory" in first_line:
            return SandboxError(
                MEMORY_LIMIT,
                f"the memory limit of {budget.limits.memory_mb} MB was exceeded",
                {"memory_mb": budget.limits.memory_mb},
            )
        if isinstance(exc, _quickjs.StackOverflow) or "Maximum call stack size exceeded" in first_line:
            return SandboxError(
                STACK_OVERFLOW, "maximum call stack size exceeded", {"stack_kb": budget.limits.stack_kb}
            )
        if during_parse:
            return SandboxError(SYNTAX_ERROR, f"the engine could not parse the bundle: {first_line}")
        return SandboxError(SANDBOX_CRASH, f"the sandbox runtime failed: {first_line}")


class _Call:
    """The event loop of one invoke(): job queue, timers and fetches until the tool's promise settles."""

    def __init__(self, engine: Engine, budget: _Budget, host: HostChannel) -> None:
        self.engine = engine
        self.budget = budget
        self.host = host
        self.queued: list[dict[str, Any]] = []  # fetches from JS not yet started at the host
        self.in_flight: dict[int, tuple[int, float]] = {}  # host id -> (js id, started at)
        self.fetches = 0
        self.peak_memory = 0

    def run(self, args: str) -> dict[str, Any]:
        engine, budget = self.engine, self.budget
        limits = budget.limits
        engine._call(budget, "begin", args)
        while True:
            engine._run_jobs(budget)
            state = engine._call(budget, "poll")
            if state.get("done"):
                break
            # The runtime counts fetches against max_fetches itself; this holds even if it did not.
            room = limits.max_fetches - self.fetches - len(self.queued)
            self.queued.extend(state.get("fetches", [])[: max(room, 0)])
            self._start_fetches(limits)
            next_timer_ms = state.get("nextTimerMs")
            if next_timer_ms is not None and next_timer_ms <= 0:
                engine._call(budget, "fireTimers")
                continue
            if next_timer_ms is None and not self.in_flight and not self.queued:
                raise SandboxError(
                    TIMEOUT,
                    "the tool's promise can never settle: nothing is pending (no timers, no fetches)",
                    {"reason": "nothing_pending"},
                )
            self._wait(next_timer_ms)
        status = engine._call(budget, "finish")
        logs = status.get("logs", [])
        if not status.get("ok"):
            return self.result(ok=False, error=status["error"], logs=logs)
        output_text = engine._call_text(budget, "takeOutput")
        size = len(output_text.encode("utf-8", "surrogatepass"))
        if size > limits.output_bytes:
            error = SandboxError(
                OUTPUT_LIMIT,
                f"output is larger than the limit of {limits.output_bytes} bytes",
                {"output_bytes": limits.output_bytes},
            )
            return self.result(ok=False, error=error.to_dict(), logs=logs)
        return self.result(ok=True, output=json.loads(output_text), logs=logs)

    def _start_fetches(self, limits: Limits) -> None:
        while self.queued and len(self.in_flight) < limits.concurrent_fetches:
            item = self.queued.pop(0)
            host_id = self.host.start_fetch(item["request"])
            self.in_flight[host_id] = (int(item["id"]), time.monotonic())
            self.fetches += 1

    def _wait(self, next_timer_ms: float | None) -> None:
        """Wait for a fetch, the next timer or a fetch timeout, whichever comes first."""
        engine, budget = self.engine, self.budget
        limits = budget.limits
        wait = budget.wall_left()
        if next_timer_ms is not None:
            wait = min(wait, next_timer_ms / 1000)
        now = time.monotonic()
        for _js_id, started in self.in_flight.values():
            wait = min(wait, started + limits.fetch_timeout_ms / 1000 - now)
        if wait <= 0 and budget.wall_left() <= 0:
            budget.binding = TIMEOUT
            raise budget.exceeded()
        self._sample_memory()
        completed = self.host.poll(max(wait, 0.0))
        for host_id, result in completed:
            entry = self.in_flight.pop(host_id, None)
            if entry is None:
                continue  # a fetch the call already gave up on (timed out)
            engine._call(budget, "fetchDone", entry[0], json.dumps(result))
        now = time.monotonic()
        for host_id, (js_id, started) in list(self.in_flight.items()):
            if now - started >= limits.fetch_timeout_ms / 1000:
                del self.in_flight[host_id]
                engine._call(budget, "fetchTimedOut", js_id)
        self._start_fetches(limits)
        if budget.wall_left() <= 0:
            budget.binding = TIMEOUT
            raise budget.exceeded()

    def _sample_memory(self) -> None:
        # Sampled only at idle points and at the end (the fallback, memory(), walks the heap).
        try:
            used = self.engine.malloc_size()
        except (KeyError, TypeError, ValueError):
            return
        self.peak_memory = max(self.peak_memory, used)

    def salvage_logs(self) -> list[dict[str, Any]]:
        """Read the logs after a limit error, with a little extra time and memory to do it."""
        ctx = self.engine._ctx
        try:
            ctx.set_memory_limit(self.budget.limits.memory_mb * MIB + _SALVAGE_MEMORY_BYTES)
            ctx.set_time_limit(_SALVAGE_SECONDS)
            text = self.engine._api["drainLogs"]()
            reply = json.loads(text) if isinstance(text, str) else {}
        except (_quickjs.JSException, ValueError):
            return [
                {"level": "warn", "message": "[logs lost: the sandbox could not return them after the error]"}
            ]
        logs = reply.get("logs", [])
        return logs if isinstance(logs, list) else []

    def result(
        self,
        *,
        ok: bool,
        logs: list[dict[str, Any]],
        output: object = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._sample_memory()
        usage: dict[str, Any] = {
            **self.budget.usage(),
            "peak_memory_bytes": self.peak_memory,
            "fetches": self.fetches,
        }
        if ok:
            return {"ok": True, "output": output, "logs": logs, "usage": usage}
        if error and error.get("type") in LIMIT_CODES:
            # The runtime caught it inside JS, but the heap may be half-built: do not reuse the context.
            self.engine._broken = True
        if error and error.get("type") == MEMORY_LIMIT:
            # Samples are taken at idle points; the heap reached its limit in between.
            usage["peak_memory_bytes"] = max(self.peak_memory, self.budget.limits.memory_mb * MIB)
        return {"ok": False, "error": error, "logs": logs, "usage": usage}


def _call_arguments(*, agent: str, tool: str, input: object, context: dict[str, Any], limits: Limits) -> str:  # noqa: A002
    """The JSON argument of the runtime's begin(); bad input becomes invalid_input."""
    try:
        input_text = json.dumps(input, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SandboxError(INVALID_INPUT, f"the input is not JSON: {exc}"[:500]) from None
    try:
        context_text = json.dumps(context, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SandboxError(INVALID_INPUT, f"the context is not JSON: {exc}"[:500]) from None
    return json.dumps(
        {
            "agent": str(agent),
            "tool": str(tool),
            "input": input_text,
            "context": json.loads(context_text) if isinstance(context, dict) else {},
            "seed": os.urandom(32).hex(),
            "limits": limits.to_dict(),
        }
    )


def _error_from_reply(reply: dict[str, Any]) -> SandboxError:
    """The SandboxError a runtime reply reports."""
    error = reply.get("error")
    return SandboxError.from_dict(error if isinstance(error, dict) else {"type": SANDBOX_CRASH})
