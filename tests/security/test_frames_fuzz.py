"""Property-based fuzzing (hypothesis) of the runner protocol's framing and of the host's frame checks,
and of the runner's own frame reader driven over its stdin.

Whatever bytes arrive, the host's readers return a checked frame or raise a ProtocolError (never
another exception, never recursion on the input's depth), and a runner fed arbitrary frames answers
with classified frames or exits cleanly at EOF, never hangs or dies by a signal.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execution.sandbox.frames import (
    SANDBOX_CODES,
    RunnerFrames,
    check_depth,
    decode_runner_payload,
)
from execution.sandbox.jail import JailConfig, JailLayers
from execution.sandbox.limits import Limits
from execution.sandbox.pool import resolve_runner, runner_from_env
from execution.sandbox.protocol import (
    RUNNER_FRAME_TYPES,
    FrameViolation,
    PeerClosed,
    ProtocolError,
    decode_payload,
    encode_frame,
    read_frame,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
frames = st.dictionaries(st.text(max_size=8), json_values, max_size=5).flatmap(
    lambda extra: st.sampled_from(["log", "fetch", "result", "error", "load", "x"]).map(
        lambda kind: {**extra, "type": kind}
    )
)


def _unstorable(value: Any) -> bool:
    """Whether a lone surrogate or NUL is left anywhere (keys included)."""
    stack = [value]
    while stack:
        node = stack.pop()
        texts = [node] if isinstance(node, str) else list(node) if isinstance(node, dict) else []
        if any("\x00" in t or any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts):
            return True
        stack.extend(node.values() if isinstance(node, dict) else node if isinstance(node, list) else [])
    return False


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((c, level + 1) for c in (node.values() if isinstance(node, dict) else node))
    return deepest


@FUZZ
@given(frame=frames)
def test_encode_decode_round_trip(frame: dict[str, Any]) -> None:
    wire = encode_frame(frame)
    assert struct.unpack(">I", wire[:4])[0] == len(wire) - 4
    wire[4:].decode("utf-8")  # always valid UTF-8, lone surrogates included (escaped)
    assert decode_payload(wire[4:]) == frame


@FUZZ
@given(frame=frames)
def test_host_decoder_returns_the_frame_cleaned(frame: dict[str, Any]) -> None:
    decoded = decode_runner_payload(encode_frame(frame)[4:])
    assert not _unstorable(decoded)
    if not _unstorable(frame):
        assert decoded == frame


@FUZZ
@given(
    payload=st.binary(max_size=512)
    | st.text(alphabet='[]{}"\\:,0123456789.eE+-ntrufalse \ud800', max_size=400).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    )
)
def test_arbitrary_bytes_only_ever_raise_protocol_errors(payload: bytes) -> None:
    for reader in (decode_runner_payload, RunnerFrames(call_id=1, request="invoke", limits=Limits()).check):
        try:
            frame = reader(payload)
        except ProtocolError:
            continue
        assert isinstance(frame, dict) and isinstance(frame["type"], str) and not _unstorable(frame)


@FUZZ
@given(value=json_values)
def test_depth_scanner_agrees_with_the_parsed_depth(value: Any) -> None:
    payload = json.dumps(value).encode()
    for limit in (0, 1, 2, 3, 5):
        if _depth(value) > limit:
            with pytest.raises(FrameViolation):
                check_depth(payload, limit)
        else:
            check_depth(payload, limit)


@FUZZ
@given(
    frame=frames, request=st.sampled_from(["invoke", "load", "introspect"]), call_id=st.sampled_from([1, 2])
)
def test_checked_frames_hold_the_host_rules(frame: dict[str, Any], request: str, call_id: int) -> None:
    frame = {"id": 1, **frame}
    limits = Limits(log_bytes=64, max_fetches=1, output_bytes=64)
    try:
        checked = RunnerFrames(call_id=call_id, request=request, limits=limits).check(encode_frame(frame)[4:])
    except FrameViolation:
        return
    assert checked["type"] in RUNNER_FRAME_TYPES
    if checked["type"] != "log":
        assert checked["id"] == call_id
    error = checked.get("error")
    if error is not None:
        assert error["type"] in SANDBOX_CODES
    assert sum(len(entry["message"]) for entry in checked.get("logs", [])) <= limits.log_bytes + 1024
    assert not _unstorable(checked)


@FUZZ
@given(stream=st.binary(max_size=256), lengths=st.lists(st.integers(0, 2**32 - 1), max_size=3))
def test_read_frame_on_a_pipe_ends_in_frames_or_protocol_errors(stream: bytes, lengths: list[int]) -> None:
    data = b"".join(struct.pack(">I", n) for n in lengths) + stream
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
        os.close(write_fd)
        write_fd = -1
        for _ in range(len(data) + 1):  # each frame consumes at least its 4-byte header
            try:
                read_frame(read_fd)
            except PeerClosed:
                break
            except ProtocolError:
                break
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_pathological_payloads_are_linear_and_refused() -> None:
    # Quote-escape chains and unterminated strings (a naive string regex backtracks quadratically),
    # a million brackets, and digits that would be a 1e6-digit integer.
    for payload in (
        b'{"type":"' + b'\\"' * 500000,
        b'"' + b'\\"[' * 300000,
        b"[" * 1000000,
        b'{"type":"result","id":1,"ok":true,"output":' + b"9" * 100000 + b"}",
    ):
        with pytest.raises(ProtocolError):
            RunnerFrames(call_id=1, request="invoke", limits=Limits()).check(payload)


# --- the runner's frame reader -------------------------------------------------------------------------

host_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["load", "introspect", "invoke", "fetch-result", "cancel", "probe", "reboot"])},
    optional={
        "id": json_values,
        "key": st.text(max_size=8) | json_values,
        "script": st.sampled_from(["", "1+", "throw 1", "export default 1"]) | json_values,
        "env": json_values,
        "filename": json_values,
        "agent": json_values,
        "tool": json_values,
        "input": json_values,
        "context": json_values,
        "limits": st.dictionaries(
            st.sampled_from(["cpu_ms", "wall_ms", "memory_mb", "bogus"]), json_values, max_size=3
        )
        | json_values,
        "evict": json_values,
        "fetch_id": json_values,
        "result": json_values,
    },
)
raw_host_frames = host_frames.map(lambda f: encode_frame(f)) | st.binary(max_size=64).map(
    lambda b: struct.pack(">I", len(b)) + b
)


@pytest.mark.timeout(600)
@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(sent=st.lists(raw_host_frames, min_size=1, max_size=6), truncate=st.booleans())
def test_runner_answers_arbitrary_frames_classified_or_exits_cleanly(
    sent: list[bytes], truncate: bool
) -> None:
    layers = (
        JailLayers() if os.geteuid() == 0 else JailLayers.only("rlimits", "seccomp", "close_fds", "clear_env")
    )
    module = (
        "execution.sandbox.native.launch"
        if resolve_runner(runner_from_env()) == "native"
        else "execution.sandbox.runner"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--jail", JailConfig(layers=layers).to_json()],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout
    try:
        data = b"".join(sent)
        if truncate:
            data = data[: max(1, len(data) - 3)]  # EOF in the middle of the last frame
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the runner already refused the stream and exited: checked below
        out = _read_until_eof(proc.stdout.fileno(), deadline=time.monotonic() + 60)
        assert proc.wait(timeout=30) >= 0  # exited by itself, not by a signal
        while out:
            (length,) = struct.unpack(">I", out[:4])
            frame = decode_runner_payload(out[4 : 4 + length])
            out = out[4 + length :]
            assert frame["type"] in RUNNER_FRAME_TYPES
            if frame["type"] == "error":
                assert frame["error"]["type"] in SANDBOX_CODES
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_until_eof(fd: int, *, deadline: float) -> bytes:
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the runner neither answered nor exited"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
