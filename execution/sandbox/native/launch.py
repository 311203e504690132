"""`python -m execution.sandbox.native.launch --jail JSON`: jail this process, then become the native runner.

All jail policy stays in Python: this applies every layer exactly as the Python runner does
(`jail.apply_jail`), except that the seccomp filters are only compiled here, from the allowlist
below. execve is not allowed under the worker filter, so the native runner installs it itself
after its own start, and the stricter call filter in every process that runs bundle code (each
bundle zygote right after its fork, BEFORE the bundle's top-level code runs; each throw-away
introspect/probe child before it reads its frame). It receives them, with its configuration, as
a boot block on an inherited pipe: three length-prefixed blocks (config JSON, worker BPF, call
BPF), each a 4-byte big-endian length and the bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import struct
import sys

import pyseccomp as seccomp

from execution.sandbox import jail
from execution.sandbox.engine import RUNTIME_PATH
from execution.sandbox.native import BINARY

# Everything is written before execve, so it must fit in the pipe's buffer (64 KiB on Linux).
_PIPE_CAPACITY = 65536

# --- the native runner's seccomp allowlists ------------------------------------------------------
#
# Both filters are allowlists: anything not below kills the whole process (SIGSYS, which the worker
# reports as a sandbox_crash). WORKER: only the worker (the process that forks zygotes and never
# runs bundle code). CALL: also every process that runs bundle code (zygotes, introspect and probe
# children); filters stack, so those processes get exactly the CALL rows. Derived with `strace -f`
# of the runner through load, invoke, fetch, timers, limit errors, introspect and the test probes.
# A rule is a tuple of argument conditions (all must hold); several rows for one syscall are
# alternatives. What is deliberately absent from CALL: every file open, process creation, exec,
# sockets, kill/tkill/tgkill (a zygote of one organization shares the worker's uid with the
# zygotes of others, so it must not be able to signal anything: the runner's fatal paths _exit),
# ptrace, process_vm_*, prctl, ioctl, fcntl, PROT_EXEC mappings, and prlimit64 on another pid.
WORKER = "worker"
CALL = "call"

_A = seccomp.Arg
_PROT_EXEC = 0x4
_MADV_DONTNEED = 4
_ITIMER_PROF = 2
_SIGKILL = 9
_AF_UNIX = 1
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
# open flags that write or create: the worker only ever opens read-only (/proc/self/statm).
_O_WRITING = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000 | 0o20000000  # WRONLY RDWR CREAT TRUNC APPEND TMPFILE
# clone flags that make namespaces or threads: a worker forks plain processes only.
_CLONE_DENIED = 0x00010000 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
_CLONE_DENIED |= 0x20000000 | 0x40000000 | 0x00000080  # NEWUTS..NEWNET, NEWCGROUP; THREAD above
_NO_EXEC = (_A(2, seccomp.MASKED_EQ, _PROT_EXEC, 0),)
# clock ids 0..15 are this process's own clocks; negative ids name other processes' CPU clocks.
_OWN_CLOCKS = (_A(0, seccomp.MASKED_EQ, 0xFFFFFFF0, 0),)

SYSCALLS: tuple[tuple[str, str, tuple[seccomp.Arg, ...]], ...] = (
    # the host channel, zygote pipes, frames
    ("read", CALL, ()),
    ("write", CALL, ()),
    ("pread64", CALL, ()),  # a zygote's /proc/self/statm, opened before its filter (vsize per call)
    ("close", CALL, ()),
    ("close_range", CALL, ()),
    ("poll", CALL, ()),
    ("ppoll", CALL, ()),
    ("newfstatat", CALL, ()),
    ("fstat", CALL, ()),
    ("lseek", CALL, ()),
    ("recvmsg", CALL, ()),  # a zygote's own channel (fds passed by the worker)
    ("pipe2", WORKER, ()),
    ("socketpair", WORKER, (_A(0, seccomp.EQ, _AF_UNIX),)),
    ("sendmsg", WORKER, ()),  # SCM_RIGHTS: a zygote's channel handed to the host
    ("dup2", WORKER, ()),  # a new zygote's channel onto its fds 0/1, before its call filter
    ("openat", WORKER, (_A(2, seccomp.MASKED_EQ, _O_WRITING, 0),)),
    # memory: the JS heap arena, its write-protection faults, malloc; never executable
    ("mmap", CALL, _NO_EXEC),
    ("mprotect", CALL, _NO_EXEC),
    ("munmap", CALL, ()),
    ("mremap", CALL, ()),
    ("madvise", CALL, (_A(2, seccomp.EQ, _MADV_DONTNEED),)),
    ("mincore", CALL, ()),
    ("brk", CALL, ()),
    # time, randomness, the per-call CPU backstop
    ("clock_gettime", CALL, _OWN_CLOCKS),
    ("clock_getres", CALL, _OWN_CLOCKS),
    ("clock_gettime", WORKER, ()),  # the worker reads its zygotes' CPU clocks (metering)
    ("gettimeofday", CALL, ()),
    ("nanosleep", CALL, ()),
    ("clock_nanosleep", CALL, _OWN_CLOCKS),
    ("getitimer", CALL, ()),
    ("setitimer", CALL, (_A(0, seccomp.EQ, _ITIMER_PROF),)),
    ("getrandom", CALL, ()),
    # signals: handlers for its own faults only; nothing that sends one from a zygote
    ("rt_sigaction", CALL, ()),
    ("rt_sigprocmask", CALL, ()),
    ("rt_sigreturn", CALL, ()),
    ("restart_syscall", CALL, ()),
    ("kill", WORKER, (_A(1, seccomp.EQ, _SIGKILL),)),  # evicting / reaping its own zygotes
    # processes and limits
    ("clone", WORKER, (_A(0, seccomp.MASKED_EQ, _CLONE_DENIED, 0),)),
    ("wait4", WORKER, ()),
    ("set_robust_list", WORKER, ()),  # glibc, in every child right after fork
    ("rseq", WORKER, ()),
    ("exit", CALL, ()),
    ("exit_group", CALL, ()),
    ("prlimit64", CALL, (_A(0, seccomp.EQ, 0),)),  # its own limits only (hard limits are the jail's)
    ("prctl", WORKER, (_A(0, seccomp.EQ, _PR_SET_PDEATHSIG),)),
    ("prctl", WORKER, (_A(0, seccomp.EQ, _PR_SET_SECCOMP),)),
    ("prctl", WORKER, (_A(0, seccomp.EQ, _PR_SET_NO_NEW_PRIVS),)),
    ("prctl", WORKER, (_A(0, seccomp.EQ, _PR_SET_DUMPABLE),)),
    ("getpid", CALL, ()),
    ("gettid", CALL, ()),
    ("getuid", CALL, ()),
    ("geteuid", CALL, ()),
    ("getgid", CALL, ()),
    ("getegid", CALL, ()),
    ("getgroups", CALL, ()),
    ("futex", CALL, ()),
    ("sched_yield", CALL, ()),
)


def build_filter(scope: str, *, set_nnp: bool = True) -> seccomp.SyscallFilter:
    """The allowlist filter of `scope` (WORKER: every row; CALL: the CALL rows), killing on anything else."""
    flt = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
    flt.set_attr(seccomp.Attr.CTL_NNP, 1 if set_nnp else 0)
    try:
        # A binary tree over syscall numbers: ~6 comparisons per syscall instead of a scan of the
        # list, and a zygote's syscalls pass two stacked filters.
        flt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass  # libseccomp older than 2.5: the linear program is as strict, only slower
    for name, where, rule in SYSCALLS:
        if scope == CALL and where != CALL:
            continue
        flt.add_rule(seccomp.ALLOW, name, *rule)
    # glibc's fork tries clone3 first and falls back to clone on ENOSYS; clone3's flags are
    # behind a pointer the filter cannot read, so it is refused softly rather than allowed.
    flt.add_rule(seccomp.ERRNO(38), "clone3")  # ENOSYS
    return flt


def native_filters(layers: jail.JailLayers) -> tuple[bytes, bytes]:
    """The worker and call programs compiled (BPF), as the native runner installs them."""
    worker = jail.export_bpf(build_filter(WORKER, set_nnp=layers.no_new_privs))
    call = jail.export_bpf(build_filter(CALL))
    return worker, call


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
    worker_bpf, call_bpf = native_filters(config.layers) if config.layers.seccomp else (b"", b"")
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
