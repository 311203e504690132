"""The host's checks of every frame a runner sends: nothing a runner says is trusted.

Bundle code runs in the runner and may have subverted the JS runtime (or, if it escaped, the runner
itself), so each frame is re-validated here, for every backend (native and Python runner, local pool
and Docker): its length against what the exchange can legitimately produce (refused before the body
is read), its nesting depth before parsing (a byte scan, never recursion), its JSON (no NaN or
Infinity, no number JS could not have written), then a schema per frame type: the type of every
field, byte and character sizes per field class against the call's limits, counts (logs, fetch
frames per call against `max_fetches`, fetches in flight against `concurrent_fetches`, counted by
the host itself), and error types from the closed set a sandbox may report. Unknown keys are
dropped. Text is cleaned by the rule of `values.py` (lone surrogates and NUL become U+FFFD).

A frame that breaks a rule raises `protocol.FrameViolation` (a `ProtocolError`): the pool kills the worker
or container that sent it and the call ends `sandbox_crash` with `detail.reason` =
"protocol_violation", a message written by the host, and the CPU the call may have used metered.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import time
from collections.abc import Collection
from itertools import accumulate, count
from typing import Any

from execution.sandbox.errors import CODES, QUOTA_EXCEEDED, RATE_LIMITED, SANDBOX_CRASH, SandboxError
from execution.sandbox.limits import KIB, Limits
from execution.sandbox.protocol import MAX_FRAME_BYTES, FrameViolation, read_payload
from execution.sandbox.values import clean_value

# serialize.js refuses outputs nested deeper than 200 levels; the frame and manifest wrappers add a few.
MAX_FRAME_DEPTH = 256
# Error types a sandbox may report. quota_exceeded and rate_limited are decided by the host only.
SANDBOX_CODES: frozenset[str] = CODES - {QUOTA_EXCEEDED, RATE_LIMITED}
LOG_LEVELS = frozenset({"log", "info", "debug", "warn", "error"})
# The runtime caps error messages at 4,000 characters and stacks at 8,000 (serialize.js); its own
# messages quote at most 200 characters of bundle text.
MAX_ERROR_MESSAGE_CHARS = 16 * KIB
MAX_ERROR_DETAIL_BYTES = 256 * KIB
# Room for the runtime's own notices ("[logs truncated: ...]", "[logs lost: ...]") past log_bytes.
LOG_NOTICE_CHARS = 1 * KIB
MAX_LOG_ENTRY_OVERHEAD = 48  # bytes of `{"level":"debug","message":""},` around each message
MAX_RUNNER_LOG_FRAMES = 32  # runner diagnostics per exchange (the runner sends none during calls)
MAX_RUNNER_LOG_BYTES = 64 * KIB
MAX_USAGE_KEYS = 32
MAX_FETCH_HEADERS = 1000
MAX_SAFE_INTEGER = 2**53 - 1
ENVELOPE_BYTES = 64 * KIB
# A fetch the runner timed out itself (fetch_timeout_ms after it sent the frame) frees its slot
# a little before the host's copy of it ends: such fetches no longer count as in flight.
_FETCH_SLOT_MARGIN_S = 1.0

_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN_AS_ONE = bytes.maketrans(b"[]{}", b"\x01\x00\x01\x00")
# Escapes that decode to NUL or a surrogate, and raw surrogates (WTF-8): only then are values cleaned.
_SUSPECT_TEXT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")


def _suspect(payload: bytes) -> bool:
    """Whether the text may hold a NUL or a surrogate to clean (two substring scans in C, then a regex)."""
    return (b"\\u" in payload or b"\xed" in payload) and _SUSPECT_TEXT.search(payload) is not None


def check_depth(payload: bytes, limit: int = MAX_FRAME_DEPTH) -> None:
    """Refuse a JSON text whose arrays and objects nest deeper than `limit`, without parsing it.

    Counts `[` and `{` outside string literals (exact for valid JSON; invalid JSON fails parsing
    later anyway). Linear in the payload, all in C loops (bytes.count, re, translate, accumulate).
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return
    # After the k-th bracket (1-based) the depth is 2 * (opens so far) - k.
    opens = accumulate(brackets.translate(_OPEN_AS_ONE))
    depth = max(map(operator.sub, map((2).__mul__, opens), count(1)))
    if depth > limit:
        raise FrameViolation(f"frame nested deeper than {limit} levels")


@functools.lru_cache(maxsize=256)
def _max_frame_bytes(request: str, limits: Limits) -> int:
    """The largest frame an exchange can legitimately receive (escaping can triple text)."""
    if request in ("introspect", "probe"):
        return MAX_FRAME_BYTES
    max_log_entries = max(1024, limits.log_bytes // 8)
    logs = 6 * (limits.log_bytes + LOG_NOTICE_CHARS) + MAX_LOG_ENTRY_OVERHEAD * max_log_entries
    result = logs + MAX_ERROR_DETAIL_BYTES + 6 * MAX_ERROR_MESSAGE_CHARS + ENVELOPE_BYTES
    if request == "invoke":
        result += 3 * limits.output_bytes
        fetch = 2 * limits.fetch_request_bytes + 6 * limits.fetch_request_bytes + ENVELOPE_BYTES
        result = max(result, fetch)
    return min(result, MAX_FRAME_BYTES)


def _refuse_constant(name: str) -> Any:
    raise FrameViolation(f"frame holds {name}, which JSON.stringify never writes")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise FrameViolation("frame holds a number too large for a double")
    return value


def _js_int(text: str) -> int:
    if len(text.lstrip("-")) > 21:
        raise FrameViolation("frame holds an integer longer than JavaScript writes one")
    return int(text)


# Built once: json.loads with keyword arguments builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_js_int)


def decode_runner_payload(payload: bytes, *, depth: int = MAX_FRAME_DEPTH) -> dict[str, Any]:
    """Parse a runner frame body: depth first, then strict JSON; text cleaned (values.py)."""
    check_depth(payload, depth)
    try:
        # surrogatepass: a raw (WTF-8) surrogate decodes and is then cleaned like an escaped one.
        text = payload.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise FrameViolation("frame is not UTF-8") from None
    suspect = _suspect(payload)
    try:
        # Every number through the checking hooks: cheaper than scanning the text for long digit
        # runs and big exponents first (measured: 6 us against 3 + 5 us on a weather result).
        frame = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, FrameViolation):
            raise
        raise FrameViolation("frame is not JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameViolation("frame is not an object with a string 'type'")
    if suspect:
        frame = clean_value(frame)
    return frame


def read_ready_frame(fd: int) -> dict[str, Any]:
    """The runner's first frame, `log` "ready" with its jail status; anything else is a violation."""
    frame = decode_runner_payload(read_payload(fd, MAX_RUNNER_LOG_BYTES))
    detail = frame.get("detail")
    if frame["type"] != "log" or frame.get("message") != "ready" or not isinstance(detail, dict):
        raise FrameViolation(f"the runner sent {str(frame['type'])[:40]!r} before 'ready'")
    layers = detail.get("layers", {})
    if not isinstance(layers, dict) or not all(isinstance(v, str) for v in layers.values()):
        raise FrameViolation("the ready frame's layers are not a map of names to states")
    return frame


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


class RunnerFrames:
    """The host's view of one exchange (one request frame and every frame the runner sends for it).

    `read` returns frames that hold exactly the documented fields, with the documented types and
    within the call's limits; anything else raises `FrameViolation`.
    """

    def __init__(
        self,
        *,
        call_id: int,
        request: str,
        limits: Limits,
        deadline: float | None = None,
        nonblocking: bool = False,
    ) -> None:
        self.call_id = call_id
        self.request = request
        self.limits = limits
        self.started = time.monotonic()
        self.deadline = deadline
        self.nonblocking = nonblocking  # the fds it reads are in O_NONBLOCK mode
        self.fetches = 0
        self.fetch_started: dict[int, float] = {}
        self.log_frames = 0
        self.max_log_entries = max(1024, limits.log_bytes // 8)
        self.max_frame_bytes = _max_frame_bytes(request, limits)

    # --- reading -----------------------------------------------------------------------------
    def read(self, fd: int, pending: Collection[int] = ()) -> dict[str, Any]:
        """Read and check the next frame; `pending`: fetch ids the host has not answered yet.

        A runner that stops in the middle of a frame is a violation at the exchange's deadline.
        """
        payload = read_payload(fd, self.max_frame_bytes, deadline=self.deadline, nonblocking=self.nonblocking)
        return self.check(payload, pending)

    def check(self, payload: bytes, pending: Collection[int] = ()) -> dict[str, Any]:
        """Check one frame body (see `read`)."""
        if len(payload) > self.max_frame_bytes:
            raise FrameViolation(f"frame length {len(payload)} exceeds {self.max_frame_bytes}")
        frame = decode_runner_payload(payload)
        kind = frame["type"]
        if kind == "log":
            return self._log(frame, len(payload))
        if frame.get("id") != self.call_id or isinstance(frame.get("id"), bool):
            raise FrameViolation(f"{kind[:20]!r} frame for another call than {self.call_id}")
        if kind == "fetch":
            return self._fetch(frame, pending)
        if kind == "result":
            return self._result(frame, len(payload))
        if kind == "error":
            checked = {
                "type": "error",
                "id": self.call_id,
                "error": self._error(frame.get("error")),
                "zygote_lost": _bool(frame.get("zygote_lost", False), "zygote_lost"),
            }
            if "usage" in frame:  # what a failed load or call cost (the worker's rusage when reaped)
                checked["usage"] = self._usage(frame["usage"])
            return checked
        raise FrameViolation(f"unknown runner frame type {kind[:20]!r}")

    def failure(self, exc: BaseException) -> SandboxError:
        """The classified error of a call whose runner broke the protocol (or whose stream failed)."""
        wall_ms = round((time.monotonic() - self.started) * 1000)
        if isinstance(exc, FrameViolation):
            error = SandboxError(
                SANDBOX_CRASH,
                f"the sandbox broke the runner protocol and was stopped: {exc}",
                {"reason": "protocol_violation"},
            )
            # The runner's own figures are not believed: charge what the call could have used.
            error.usage = {"cpu_ms": min(wall_ms, self.limits.cpu_ms), "wall_ms": wall_ms}
            return error
        return SandboxError(SANDBOX_CRASH, f"the sandbox worker failed: {exc}")

    # --- frame types ---------------------------------------------------------------------------
    def _log(self, frame: dict[str, Any], size: int) -> dict[str, Any]:
        self.log_frames += 1
        if self.log_frames > MAX_RUNNER_LOG_FRAMES or size > MAX_RUNNER_LOG_BYTES:
            raise FrameViolation("too many or too large runner log frames")
        detail = frame.get("detail")
        return {
            "type": "log",
            "level": _text(frame.get("level", "info"), "log level", 16),
            "message": _text(frame.get("message", ""), "log message", MAX_RUNNER_LOG_BYTES),
            "detail": detail if isinstance(detail, dict) else {},
        }

    def _fetch(self, frame: dict[str, Any], pending: Collection[int]) -> dict[str, Any]:
        if self.request not in ("invoke", "probe"):
            raise FrameViolation(f"fetch frame during a {self.request}")
        limits = self.limits
        fetch_id = _int(frame.get("fetch_id"), "fetch_id")
        if fetch_id <= 0 or fetch_id in self.fetch_started:
            raise FrameViolation("fetch_id is not a new positive integer")
        self.fetches += 1
        if self.fetches > limits.max_fetches:
            raise FrameViolation(f"more than max_fetches ({limits.max_fetches}) fetch frames in one call")
        now = time.monotonic()
        slot_s = max(limits.fetch_timeout_ms / 1000 - _FETCH_SLOT_MARGIN_S, 0.0)
        in_flight = sum(1 for i in pending if now - self.fetch_started.get(i, now) < slot_s)
        if in_flight >= limits.concurrent_fetches:
            raise FrameViolation(
                f"more than concurrent_fetches ({limits.concurrent_fetches}) fetches in flight"
            )
        self.fetch_started[fetch_id] = now
        request = frame.get("request")
        if not isinstance(request, dict):
            raise FrameViolation("fetch request is not an object")
        url = _text(request.get("url"), "fetch url", limits.fetch_request_bytes)
        method = _text(request.get("method", "GET"), "fetch method", 32)
        headers = request.get("headers", [])
        if not isinstance(headers, list) or len(headers) > MAX_FETCH_HEADERS:
            raise FrameViolation("fetch headers are not a list of at most 1000 pairs")
        header_chars = len(url)
        for pair in headers:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise FrameViolation("a fetch header is not a [name, value] pair of strings")
            header_chars += len(pair[0]) + len(pair[1])
        if header_chars > limits.fetch_request_bytes:
            raise FrameViolation("fetch url and headers larger than fetch_request_bytes")
        body = request.get("body_b64")
        if body is not None:
            body = _text(body, "fetch body", 4 * (limits.fetch_request_bytes // 3 + 1))
        return {
            "type": "fetch",
            "id": self.call_id,
            "fetch_id": fetch_id,
            "request": {"url": url, "method": method, "headers": headers, "body_b64": body},
        }

    def _result(self, frame: dict[str, Any], size: int) -> dict[str, Any]:
        ok = _bool(frame.get("ok"), "ok")
        answer: dict[str, Any] = {"type": "result", "id": self.call_id, "ok": ok}
        if "usage" in frame:
            answer["usage"] = self._usage(frame["usage"])
        if self.request == "invoke":
            return self._invoke_result(frame, answer, size)
        if not ok:
            raise FrameViolation(f"a {self.request} result that is not ok (failures are error frames)")
        if "logs" in frame:
            answer["logs"] = self._logs(frame["logs"])
        if self.request == "load":
            answer["cached"] = _bool(frame.get("cached", False), "cached")
            if "pid" in frame:  # channel mode: the worker's answer names the zygote it forked
                pid = frame["pid"]
                if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**22:
                    raise FrameViolation("the load answer's pid is not a process id")
                answer["pid"] = pid
        elif self.request == "introspect":
            if not isinstance(frame.get("manifest"), dict):
                raise FrameViolation("the manifest is not an object")
            answer["manifest"] = _manifest(frame["manifest"])
        elif self.request == "probe":
            answer["probe"] = frame.get("probe")
        return answer

    def _invoke_result(self, frame: dict[str, Any], answer: dict[str, Any], size: int) -> dict[str, Any]:
        limits = self.limits
        answer["logs"] = self._logs(frame.get("logs", []))
        answer["usage"] = {**answer.get("usage", {}), "fetches": self.fetches}
        if answer["ok"]:
            output = frame.get("output")
            # The runtime measured the JSON text it produced; the re-encoding here differs only in
            # number spelling ("1e-07" against "1e-7") and surrogates, hence the slack.
            allowed = limits.output_bytes + limits.output_bytes // 4 + KIB
            if size > allowed and _json_bytes(output) > allowed:
                raise FrameViolation(f"output larger than output_bytes ({limits.output_bytes})")
            answer["output"] = output
            answer["error"] = None
        else:
            answer["output"] = None
            answer["error"] = self._error(frame.get("error"))
        return answer

    def _logs(self, logs: Any) -> list[dict[str, str]]:
        limits = self.limits
        if not isinstance(logs, list) or len(logs) > self.max_log_entries:
            raise FrameViolation(f"logs are not a list of at most {self.max_log_entries} entries")
        allowed = limits.log_bytes + LOG_NOTICE_CHARS
        total = 0
        checked = []
        for entry in logs:
            if not isinstance(entry, dict):
                raise FrameViolation("a log entry is not an object")
            level = entry.get("level")
            if level not in LOG_LEVELS:
                raise FrameViolation("a log entry has an unknown level")
            message = _text(entry.get("message"), "log message", allowed)
            total += len(message)
            checked.append({"level": level, "message": message})
        # The runtime counts UTF-16 units, never fewer than the code points counted here.
        if total > allowed:
            raise FrameViolation(f"logs larger than log_bytes ({limits.log_bytes})")
        return checked

    def _usage(self, usage: Any) -> dict[str, int]:
        if not isinstance(usage, dict) or len(usage) > MAX_USAGE_KEYS:
            raise FrameViolation("usage is not an object of at most 32 figures")
        checked = {}
        for key, value in usage.items():
            if len(key) > 64:
                raise FrameViolation("a usage key is too long")
            figure = _int(value, "usage figure")
            if figure < 0:
                raise FrameViolation("a usage figure is negative")
            checked[key] = figure
        return checked

    def _error(self, error: Any) -> dict[str, Any]:
        if not isinstance(error, dict):
            raise FrameViolation("the error is not an object")
        code = error.get("type")
        if code not in SANDBOX_CODES:
            shown = code[:40] if isinstance(code, str) else type(code).__name__
            raise FrameViolation(f"error type {shown!r} is not one a sandbox may report")
        message = _text(error.get("message", ""), "error message", MAX_ERROR_MESSAGE_CHARS)
        detail = error.get("detail", {})
        if detail is None:
            detail = {}
        if not isinstance(detail, dict):
            raise FrameViolation("the error detail is not an object")
        if _json_bytes(detail) > MAX_ERROR_DETAIL_BYTES:
            raise FrameViolation(f"the error detail is larger than {MAX_ERROR_DETAIL_BYTES} bytes")
        return {"type": code, "message": message, "detail": detail}


def _text(value: Any, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise FrameViolation(f"{what} is not a string")
    if len(value) > max_chars:
        raise FrameViolation(f"{what} longer than {max_chars} characters")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_SAFE_INTEGER:
        raise FrameViolation(f"{what} is not a safe integer")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise FrameViolation(f"{what} is not a boolean")
    return value


MAX_MODEL_TEXT_CHARS = 4 * KIB  # a model's provider, id or base URL (reply.js writes them as strings)
_MODEL_KEYS = ("provider", "id", "baseURL")


def _manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with every agent's model checked: `provider` and `id` strings and, when the
    bundle's inlined provider showed one, a `baseURL` string (reply.js writes nothing else there);
    other model keys are dropped."""
    agents = manifest.get("agents")
    if not isinstance(agents, dict):
        raise FrameViolation("the manifest's agents are not an object")
    for key, agent in agents.items():
        if not isinstance(agent, dict) or not isinstance(agent.get("model"), dict):
            raise FrameViolation(f"manifest agent {key[:100]!r} has no model object")
        model = agent["model"]
        for field in _MODEL_KEYS:
            value = model.get(field)
            if field == "baseURL" and value is None:
                continue
            if not isinstance(value, str) or len(value) > MAX_MODEL_TEXT_CHARS:
                raise FrameViolation(f"manifest agent {key[:100]!r}: model {field} is not a short string")
        agent["model"] = {field: model[field] for field in _MODEL_KEYS if field in model}
    return manifest
