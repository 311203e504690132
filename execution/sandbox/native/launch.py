"""`python -m execution.sandbox.native.launch --jail JSON`: jail this process, then become the native runner.

All jail policy stays in Python: this applies every layer exactly as the Python runner does
(`jail.apply_jail`), except that the seccomp filters are only compiled here. execve is denied
under the worker filter, so the native runner installs it itself after its own start, and the
stricter call filter in every process that runs calls (each bundle zygote once it has loaded, each
throw-away introspect/probe child). It receives them, with its configuration, as a
boot block on an inherited pipe: three length-prefixed blocks (config JSON, worker BPF,
call BPF), each a 4-byte big-endian length and the bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import struct
import sys

from execution.sandbox import jail
from execution.sandbox.engine import RUNTIME_PATH
from execution.sandbox.native import BINARY

# Everything is written before execve, so it must fit in the pipe's buffer (64 KiB on Linux).
_PIPE_CAPACITY = 65536


def boot_block(
    config: jail.JailConfig,
    status: dict[str, str],
    *,
    probes: bool,
    verify_restore: bool = False,
    break_restore: bool = False,
    channels: bool = False,
) -> bytes:
    """The bytes the native runner reads from its boot fd."""
    worker_bpf, call_bpf = jail.export_filters(config.layers) if config.layers.seccomp else (b"", b"")
    settings = json.dumps(
        {
            "layers": dataclasses.asdict(config.layers),
            "status": status,
            "probes": probes,
            "verify_restore": verify_restore,
            "break_restore": break_restore,
            "channels": channels,
            "runtime": str(RUNTIME_PATH),
        }
    ).encode()
    return b"".join(struct.pack(">I", len(part)) + part for part in (settings, worker_bpf, call_bpf))


def main(argv: list[str] | None = None) -> int:
    """Apply the jail, hand over the filters, execve the native runner (returns only on failure)."""
    parser = argparse.ArgumentParser(prog="execution.sandbox.native.launch")
    parser.add_argument("--jail", default=jail.JailConfig().to_json(), help="JailConfig as JSON")
    parser.add_argument("--test-probes", action="store_true", help=argparse.SUPPRESS)
    # Test-only: after every call a zygote compares its restored JS heap with the snapshot, byte
    # for byte, and aborts on any difference.
    parser.add_argument("--test-verify-restore", action="store_true", help=argparse.SUPPRESS)
    # Test-only: restores copy nothing back, to prove that the verify mode notices.
    parser.add_argument("--test-break-restore", action="store_true", help=argparse.SUPPRESS)
    # The local pool's mode: stdin is a unix socket, and each zygote gets its own channel to the
    # host, passed over it (see "zygote channels" in runner.c).
    parser.add_argument("--zygote-channels", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = jail.JailConfig.from_json(args.jail)
    status = jail.apply_jail(config, defer_seccomp=True)
    block = boot_block(
        config,
        status,
        probes=args.test_probes,
        verify_restore=args.test_verify_restore,
        break_restore=args.test_break_restore,
        channels=args.zygote_channels,
    )
    if len(block) >= _PIPE_CAPACITY:
        print(f"native runner boot block of {len(block)} bytes does not fit a pipe", file=sys.stderr)
        return 2
    read_fd, write_fd = os.pipe()
    os.write(write_fd, block)
    os.close(write_fd)
    os.set_inheritable(read_fd, True)
    binary = str(BINARY)
    # The fixed path of our own binary, with no shell: the one process this launcher exists to start.
    os.execve(binary, [binary, "--boot-fd", str(read_fd)], dict(os.environ))  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
