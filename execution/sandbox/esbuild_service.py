"""Jailed esbuild for untrusted input: one build over esbuild's service protocol, on stdin/stdout only.

`esbuild --service=VERSION` is the binary the npm package's JS API drives: length-prefixed packets
on stdin/stdout, a build request with the source inline (`stdinContents`) and `write: false`, and a
response carrying the output files, the metafile and the errors as structured records with their
location. So esbuild needs no file and the jail (`jail.tool_jail`) can fail every open. Each build
gets its own process: a memory or CPU kill ends one upload, nobody else's.

The packet format (esbuild's lib/stdio_protocol.ts): uint32 LE length, uint32 LE `id << 1 | is_response`,
then a value: 0 null, 1 bool, 2 int32, 3 string, 4 bytes (both uint32 length + data), 5 array,
6 object (uint32 count, then key string and value each). The first packet from esbuild is its
version, checked against the npm package's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import select
import signal
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from execution.sandbox import jail

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_NODE_MODULES = PROJECT_ROOT / "node_modules"
_PLATFORM_PACKAGES = {
    "x86_64": "linux-x64",
    "amd64": "linux-x64",
    "aarch64": "linux-arm64",
    "arm64": "linux-arm64",
}
# Memory is capped with RLIMIT_DATA (writable private mappings: what Go actually commits), not
# RLIMIT_AS: Go reserves ~750 MB of address space at start and, measured on esbuild 0.28, fails
# to start at some AS limits above what it needs (1152-1216 MB) while starting at lower ones.
# Measured with prlimit: a tiny build needs 80 MB of data; a 10 MB bundle under GOMEMLIMIT=512MiB
# peaks at 530 MB resident, fails at 512 MB of data and passes at 768 MB.
GO_BASELINE_DATA_MB = 128
# The address-space backstop stays the workers' (JailConfig's default, 4 GB; Go starts under it).
_STDERR_KEEP = 16 * 1024


class ToolFailure(Exception):
    """esbuild did not answer: `reason` is timeout, cpu_limit, memory_limit, output_limit or crash."""

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


def binary() -> Path:
    """The esbuild executable of the platform package (never the JS shim: node could not start jailed)."""
    package = _PLATFORM_PACKAGES.get(platform.machine().lower(), "linux-x64")
    native = _NODE_MODULES / "@esbuild" / package / "bin" / "esbuild"
    return native if native.exists() else _NODE_MODULES / "esbuild" / "bin" / "esbuild"


@functools.cache
def version() -> str:
    """The pinned esbuild version (the service refuses a host of another version, and so do we)."""
    return str(json.loads((_NODE_MODULES / "esbuild" / "package.json").read_text())["version"])


def jail_config(*, cpu_seconds: int) -> jail.JailConfig:
    """The jail of one esbuild build: the runner's layers and limits, few files, the given CPU seconds."""
    return jail.JailConfig(cpu_seconds=cpu_seconds, open_files=32)


def data_limit_mb(memory_mb: int) -> int:
    """RLIMIT_DATA for a heap budget (GOMEMLIMIT) of `memory_mb`: Go's own needs plus 1.5x the budget."""
    return GO_BASELINE_DATA_MB + memory_mb * 3 // 2


def build(
    source: bytes,
    *,
    flags: Sequence[str],
    timeout_s: float,
    cpu_seconds: int,
    memory_mb: int,
    max_output_bytes: int,
) -> dict[str, Any]:
    """Run one jailed build of `source` (as stdin) with CLI-style `flags`; return esbuild's response."""
    request = {
        "command": "build",
        "key": 0,
        "entries": [],
        "flags": list(flags),
        "write": False,
        "stdinContents": source,
        # No resolve directory: esbuild then resolves nothing relative to a directory at all.
        "stdinResolveDir": None,
        "absWorkingDir": "/",
        "nodePaths": [],
        "context": False,
    }
    return _exchange(
        service_argv(),
        encode_packet(0, is_request=True, value=request),
        config=jail_config(cpu_seconds=cpu_seconds),
        data_mb=data_limit_mb(memory_mb),
        env=go_env(memory_mb),
        timeout_s=timeout_s,
        max_output_bytes=max_output_bytes,
    )


def spawn(
    argv: list[str], *, config: jail.JailConfig, data_mb: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a tool jailed by `config` with pipes on stdin, stdout and stderr (its own session)."""
    try:
        return subprocess.Popen(  # noqa: S603 - a fixed binary, no shell
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            env=env,
            close_fds=True,
            start_new_session=True,
            preexec_fn=jail.tool_jail(config, data_mb=data_mb),  # noqa: PLW1509 - fork-safe by design: see jail.tool_jail
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.error("esbuild could not be started jailed: %s", exc)
        raise ToolFailure("crash", str(exc)) from None


def service_argv() -> list[str]:
    """The command line of esbuild's service mode."""
    return [str(binary()), f"--service={version()}"]


def go_env(memory_mb: int) -> dict[str, str]:
    """esbuild's whole environment: Go's scheduler and heap budget, nothing of the host's.

    GOGC=off with GOMEMLIMIT: no collection until the heap reaches the budget (what the esbuild
    CLI does, GC off, is 25% faster than its service mode with GC on: measured on a 0.9 MB bundle),
    then collections keep it there; RLIMIT_DATA is the hard stop.
    """
    return {"GOGC": "off", "GOMAXPROCS": "2", "GOMEMLIMIT": f"{memory_mb}MiB"}


def _exchange(
    argv: list[str],
    request: bytes,
    *,
    config: jail.JailConfig,
    data_mb: int,
    env: dict[str, str],
    timeout_s: float,
    max_output_bytes: int,
) -> dict[str, Any]:
    """Start the jailed tool, send the request, read version + response packets within the deadline."""
    deadline = time.monotonic() + timeout_s
    proc = spawn(argv, config=config, data_mb=data_mb, env=env)
    assert proc.stdin and proc.stdout and proc.stderr  # noqa: S101 - pipes requested above
    stdin, stdout, stderr = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
    for fd in (stdin, stdout, stderr):
        os.set_blocking(fd, False)
    pending = memoryview(request)
    received = bytearray()
    log = bytearray()
    packets: list[bytes] = []
    reason = ""
    open_reads = {stdout, stderr}
    try:
        while len(packets) < 2 and open_reads:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "timeout"
                break
            writers = [stdin] if pending else []
            readable, writable, _ = select.select(list(open_reads), writers, [], remaining)
            if writable:
                try:
                    pending = pending[os.write(stdin, pending[: 1 << 20]) :]
                except BrokenPipeError:
                    pending = memoryview(b"")
                if not pending:
                    proc.stdin.close()
            for fd in readable:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    open_reads.discard(fd)
                elif fd == stderr:
                    # The head: Go's fatal error line comes before its goroutine dump.
                    log += chunk[: max(0, _STDERR_KEEP - len(log))]
                else:
                    received += chunk
                    if len(received) > max_output_bytes:
                        reason = "output_limit"
                        break
                    packets.extend(_split_packets(received))
            if reason:
                break
    finally:
        if not (proc.stdin.closed):
            proc.stdin.close()
        if len(packets) < 2 or reason:
            _kill(proc)
        status, usage = _reap(proc)
        proc.stdout.close()
        proc.stderr.close()
    text_log = log.decode("utf-8", "replace")
    if len(packets) < 2 or reason:
        reason = reason or _death_reason(status, usage, text_log, config, data_mb)
        logger.warning(
            "esbuild build failed (%s, status %s, peak rss %s KiB): %s",
            reason,
            status,
            usage.ru_maxrss,
            text_log[:1000],
        )
        raise ToolFailure(reason, text_log)
    if packets[0].decode("utf-8", "replace") != version():
        raise ToolFailure("crash", f"esbuild answered as version {packets[0][:40]!r}")
    header, value = decode_packet(packets[1])
    if header != 1 or not isinstance(value, dict):
        raise ToolFailure("crash", "esbuild sent a request or a malformed response")
    if value.get("error"):
        logger.warning("esbuild refused the build request: %s", str(value["error"])[:2000])
        raise ToolFailure("crash", str(value["error"]))
    return value


def _split_packets(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete length-prefixed packet at the start of `buffer`."""
    found = []
    while len(buffer) >= 4:
        (length,) = struct.unpack_from("<I", buffer)
        if len(buffer) < 4 + length:
            break
        found.append(bytes(buffer[4 : 4 + length]))
        del buffer[: 4 + length]
    return found


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, Any]:
    """Wait for the tool (it exits when its stdin closes); return its wait status and rusage."""
    deadline = time.monotonic() + 5
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if time.monotonic() > deadline:
            _kill(proc)
            deadline = time.monotonic() + 5
        time.sleep(0.001)


def _death_reason(status: int, usage: Any, log: str, config: jail.JailConfig, data_mb: int) -> str:
    """Why the tool ended without answering: a limit the jail enforces, or a crash."""
    cpu = usage.ru_utime + usage.ru_stime
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGKILL, signal.SIGXCPU)
    if killed and cpu >= config.cpu_seconds:
        return "cpu_limit"
    # Go aborts (exit status 2) with "out of memory" when an allocation fails under RLIMIT_DATA, but
    # its GC (Go 1.25+, green tea) sometimes faults on the failed mapping instead: measured, those
    # crashes come at a peak resident size of about half the limit.
    if "out of memory" in log or "cannot allocate memory" in log or "failed to reserve" in log:
        return "memory_limit"
    if usage.ru_maxrss * 1024 >= data_mb * 1024 * 1024 // 3:
        return "memory_limit"
    return "crash"


def encode_packet(packet_id: int, *, is_request: bool, value: Any) -> bytes:
    """One packet of the service protocol."""
    parts = [struct.pack("<I", packet_id << 1 | (0 if is_request else 1))]
    _encode(value, parts)
    body = b"".join(parts)
    return struct.pack("<I", len(body)) + body


def _encode(value: Any, parts: list[bytes]) -> None:
    if value is None:
        parts.append(b"\x00")
    elif isinstance(value, bool):
        parts.append(bytes((1, int(value))))
    elif isinstance(value, int):
        parts.append(b"\x02" + struct.pack("<i", value))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        parts.append(b"\x03" + struct.pack("<I", len(data)) + data)
    elif isinstance(value, bytes | bytearray):
        parts.append(b"\x04" + struct.pack("<I", len(value)) + bytes(value))
    elif isinstance(value, list | tuple):
        parts.append(b"\x05" + struct.pack("<I", len(value)))
        for item in value:
            _encode(item, parts)
    elif isinstance(value, dict):
        parts.append(b"\x06" + struct.pack("<I", len(value)))
        for key, item in value.items():
            data = str(key).encode("utf-8")
            parts.append(struct.pack("<I", len(data)) + data)
            _encode(item, parts)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} for esbuild")


def decode_packet(packet: bytes) -> tuple[int, Any]:
    """Return (1 for a response / 0 for a request, value) of one packet without its length prefix."""
    (header,) = struct.unpack_from("<I", packet)
    try:
        value, end = _decode(packet, 4, depth=0)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError):
        raise ToolFailure("crash", "esbuild sent a malformed packet") from None
    if end != len(packet):
        raise ToolFailure("crash", "esbuild sent trailing bytes in a packet")
    return header & 1, value


def _decode(data: bytes, pos: int, *, depth: int) -> tuple[Any, int]:
    if depth > 64:
        raise ValueError("nested too deep")
    kind = data[pos]
    pos += 1
    if kind == 0:
        return None, pos
    if kind == 1:
        return bool(data[pos]), pos + 1
    if kind == 2:
        return struct.unpack_from("<i", data, pos)[0], pos + 4
    if kind in (3, 4):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + length > len(data):
            raise ValueError("truncated")
        raw = data[pos : pos + length]
        return (raw.decode("utf-8") if kind == 3 else raw), pos + length
    if kind == 5:
        (count,) = struct.unpack_from("<I", data, pos)
        pos += 4
        items = []
        for _ in range(count):
            item, pos = _decode(data, pos, depth=depth + 1)
            items.append(item)
        return items, pos
    if kind == 6:
        (count,) = struct.unpack_from("<I", data, pos)
        pos += 4
        record: dict[str, Any] = {}
        for _ in range(count):
            (length,) = struct.unpack_from("<I", data, pos)
            pos += 4
            key = data[pos : pos + length].decode("utf-8")
            pos += length
            record[key], pos = _decode(data, pos, depth=depth + 1)
        return record, pos
    raise ValueError(f"unknown value kind {kind}")
