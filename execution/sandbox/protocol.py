"""Runner protocol: length-prefixed JSON frames between the host and a sandbox runner.

Every frame is a 4-byte big-endian unsigned length followed by that many bytes of
UTF-8 JSON holding one object with a ``"type"`` key. Frames larger than
``MAX_FRAME_BYTES`` are a protocol error (the peer is killed, never trusted).
The same frames travel over a jailed worker's channels (backend ``local``: stdin/stdout,
then each zygote's own pipe pair) and a container's stdin/stdout (backend ``docker``).

Host → runner:

* ``load {id, key, script, env, filename, evict: [key...]}`` – evaluate a bundle
  version into a zygote kept under ``key`` (org + version + env digest); evicts the
  listed keys first. Answered by ``result {id, ok: true}`` or ``error``.
* ``introspect {id, script, env, filename}`` – evaluate the bundle in a throw-away
  child and return ``result {id, ok: true, manifest}``.
* ``invoke {id, key, agent, tool, input, context, limits}`` – run one tool call from the
  zygote ``key``'s post-load state (a forked child of it in the Python runner; the zygote
  itself in the native runner, which restores its heap afterwards); answered by
  ``result {id, ...engine result}``.
* ``fetch-result {id, fetch_id, result}`` – the host's answer to a ``fetch`` frame: ``result`` is
  ``{ok: true, status, statusText, url, redirected, headers: [[k, v]...], body_b64}`` (``url`` the
  final one, ``redirected`` whether a redirect led there) or ``{ok: false, error: {type, message}}``.
* ``cancel {id}`` – stop call ``id``; the runner answers with an ``error`` of type
  ``cancelled`` if it still can (the local host also kills the worker).

Runner → host:

* ``log {level, message, detail}`` – runner diagnostics; the first frame a runner
  sends is ``log`` with ``message: "ready"`` and the jail status in ``detail``.
* ``fetch {id, fetch_id, request}`` – JS called ``fetch``; ``request`` is
  ``{url, method, headers: [[k, v]...], body_b64}``.
* ``result {id, ...}`` – the final answer to ``load``/``introspect``/``invoke``.
* ``error {id, error: {type, message, detail}, zygote_lost?}`` – the request failed with a
  classified error (taxonomy code in ``type``); ``zygote_lost: true`` (native runner) says
  the invoke's zygote is gone (it died in this call, or earlier), so the host must ``load``
  the key again before its next invoke.

Reads and writes use raw ``os.read``/``os.write`` on file descriptors, never buffered
streams: a forked call child and its parent share the same descriptors (in the native
runner a zygote and its worker take turns reading stdin), and a buffered reader could
swallow bytes of the next frame into the wrong process.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

MAX_FRAME_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

HOST_FRAME_TYPES = frozenset({"load", "introspect", "invoke", "fetch-result", "cancel"})
RUNNER_FRAME_TYPES = frozenset({"log", "fetch", "result", "error"})


class ProtocolError(Exception):
    """The peer broke the framing rules (bad length, bad JSON, closed mid-frame)."""

    code = "sandbox_crash"


class FrameViolation(ProtocolError):
    """A frame that breaks the receiver's rules (size, depth, schema); its message is the receiver's text."""


class PeerClosed(ProtocolError):
    """The peer closed the stream at a frame boundary."""


def encode_frame(frame: dict[str, Any]) -> bytes:
    """Serialise one frame to its wire form (always valid UTF-8: lone surrogates go as \\u escapes)."""
    try:
        payload = json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        # A lone surrogate (a JS string can hold one) cannot be UTF-8: escape it, as JSON.stringify does.
        payload = json.dumps(frame, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> dict[str, Any]:
    """Parse a frame body, checking it is an object with a string type."""
    try:
        frame = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from exc
    except RecursionError:
        raise ProtocolError("frame is nested too deeply") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError("frame is not an object with a string 'type'")
    return frame


def write_frame(fd: int, frame: dict[str, Any]) -> None:
    """Write one frame to a file descriptor, looping over partial writes."""
    data = memoryview(encode_frame(frame))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(
    fd: int, size: int, *, at_boundary: bool, deadline: float | None = None, nonblocking: bool = False
) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        # A blocking fd is polled before each read so the deadline holds; a non-blocking one is read
        # at once (no extra system call when the bytes are there) and polled only when empty.
        if not nonblocking and deadline is not None and not _wait(fd, deadline):
            raise FrameViolation("the peer stalled in the middle of a frame past the deadline")
        try:
            chunk = os.read(fd, min(remaining, 1 << 20))
        except BlockingIOError:
            if not _wait(fd, deadline):
                raise FrameViolation("the peer stalled in the middle of a frame past the deadline") from None
            continue
        if not chunk:
            if at_boundary and remaining == size:
                raise PeerClosed("peer closed the stream")
            raise ProtocolError("peer closed the stream in the middle of a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_payload(
    fd: int, max_bytes: int = MAX_FRAME_BYTES, *, deadline: float | None = None, nonblocking: bool = False
) -> bytes:
    """Block until one whole frame body has been read; a length over `max_bytes` is refused unread.

    With `deadline` (time.monotonic()), a peer that stops in the middle of a frame is a
    FrameViolation once it passes, instead of a read that never returns. `nonblocking`: the fd
    is in O_NONBLOCK mode (the pool's channels), so reads need no poll while bytes are there.
    """
    header = _read_exact(fd, _HEADER.size, at_boundary=True, deadline=deadline, nonblocking=nonblocking)
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise FrameViolation(f"frame length {length} exceeds {max_bytes}")
    return _read_exact(fd, length, at_boundary=False, deadline=deadline, nonblocking=nonblocking)


def _wait(fd: int, deadline: float | None) -> bool:
    """Wait until `fd` is readable, at most until `deadline` (None: for ever)."""
    return wait_readable(fd, None if deadline is None else max(deadline - time.monotonic(), 0.0))


def read_frame(fd: int) -> dict[str, Any]:
    """Block until one whole frame has been read from a file descriptor."""
    return decode_payload(read_payload(fd))


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Return whether `fd` has data (or EOF) within `timeout` seconds."""
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)
