"""The native runner's seccomp allowlists checked rule by rule, as Firecracker checks its filters.

Each case runs tests/security/seccomp_probe.c (compiled here) under the exact BPF program
execution/sandbox/native/launch.py builds: it installs the program and makes one system call.
Every allowed row must return; every syscall outside the list, and every allowed syscall with
arguments outside its rule, must kill the process with SIGSYS before it runs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pyseccomp as seccomp
import pytest

from execution.sandbox.jail import JailLayers
from execution.sandbox.native import launch

HELPER_SOURCE = Path(__file__).with_name("seccomp_probe.c")
AT_FDCWD = -100
SIGCHLD = 17
NO_SUCH_PID = 2**31 - 8

# Arguments that satisfy every rule of the row and make the call harmless (bad fds, NULL buffers,
# empty ranges, a pid that does not exist). Several entries: one per row of that syscall.
ALLOWED_ARGS: dict[str, list[Sequence[int]]] = {
    "read": [(-1, 0, 0)],
    "write": [(-1, 0, 0)],
    "pread64": [(-1, 0, 0, 0)],
    "close": [(-1,)],
    "close_range": [(1_000_000, 1_000_001, 0)],
    "poll": [(0, 0, 0)],
    "ppoll": [(0, 0, 1, 0, 0)],
    "newfstatat": [(-1, 0, 0, 0)],
    "fstat": [(-1, 0)],
    "lseek": [(-1, 0, 0)],
    "recvmsg": [(-1, 0, 0)],
    "pipe2": [(0, 0)],
    "socketpair": [(1, 1, 0, 0)],
    "sendmsg": [(-1, 0, 0)],
    "dup2": [(-1, -1)],
    "openat": [(AT_FDCWD, 0, 0, 0)],
    "mmap": [(0, 4096, 0x3, 0x22, -1, 0)],
    "mprotect": [(0, 0, 0x1)],
    "munmap": [(0, 0)],
    "mremap": [(0, 0, 0, 0)],
    "madvise": [(0, 0, 4)],
    "mincore": [(0, 0, 0)],
    "brk": [(0,)],
    "clock_gettime": [(1, 0)],
    "clock_getres": [(1, 0)],
    "gettimeofday": [(0, 0)],
    "nanosleep": [(1, 0)],
    "clock_nanosleep": [(1, 0, 1, 0)],
    "getitimer": [(2, 0)],
    "setitimer": [(2, 0, 0)],
    "getrandom": [(0, 0, 0)],
    "rt_sigaction": [(10, 0, 0, 8)],
    "rt_sigprocmask": [(0, 0, 0, 8)],
    "rt_sigreturn": [()],
    "restart_syscall": [()],
    "kill": [(NO_SUCH_PID, 9)],
    "clone": [(SIGCHLD, 0, 0, 0, 0)],
    "wait4": [(-1, 0, 1, 0)],
    "set_robust_list": [(0, 0)],
    "rseq": [(0, 0, 0, 0)],
    "exit": [(0,)],
    "exit_group": [(0,)],
    "prlimit64": [(0, 7, 0, 0)],
    "prctl": [(1, 0), (22, 2, 0), (38, 1, 0, 0, 0), (4, 0)],
    "getpid": [()],
    "gettid": [()],
    "getuid": [()],
    "geteuid": [()],
    "getgid": [()],
    "getegid": [()],
    "getgroups": [(0, 0)],
    "futex": [(0, 0, 0, 0, 0, 0)],
    "sched_yield": [()],
}

# Never allowed anywhere: escapes, other processes, new privileges, kernel attack surface.
DENIED: list[tuple[str, Sequence[int]]] = [
    ("socket", (2, 1, 0)),
    ("connect", (-1, 0, 0)),
    ("bind", (-1, 0, 0)),
    ("execve", (0, 0, 0)),
    ("execveat", (AT_FDCWD, 0, 0, 0, 0)),
    ("fork", ()),
    ("vfork", ()),
    ("ptrace", (0, 0, 0, 0)),
    ("process_vm_readv", (1, 0, 0, 0, 0, 0)),
    ("process_vm_writev", (1, 0, 0, 0, 0, 0)),
    ("tkill", (NO_SUCH_PID, 0)),
    ("tgkill", (NO_SUCH_PID, NO_SUCH_PID, 0)),
    ("open", (0, 0)),
    ("ioctl", (0, 0x5401, 0)),
    ("fcntl", (0, 1)),
    ("dup", (0,)),
    ("unshare", (0,)),
    ("setns", (-1, 0)),
    ("mount", (0, 0, 0, 0, 0)),
    ("bpf", (0, 0, 0)),
    ("perf_event_open", (0, 0, 0, 0, 0)),
    ("io_uring_setup", (0, 0)),
    ("userfaultfd", (0,)),
    ("keyctl", (0,)),
    ("personality", (0xFFFFFFFF,)),
    ("memfd_create", (0, 0)),
    ("seccomp", (0, 0, 0)),
    ("setuid", (0,)),
    ("chdir", (0,)),
]

# Allowed syscalls with an argument outside their rule, per filter.
OUTSIDE_RULE: list[tuple[str, str, Sequence[int]]] = [
    (launch.CALL, "mmap", (0, 4096, 0x5, 0x22, -1, 0)),  # PROT_READ|PROT_EXEC
    (launch.CALL, "mprotect", (0, 0, 0x4)),  # PROT_EXEC
    (launch.CALL, "prlimit64", (1, 7, 0, 0)),  # another process's limits
    (launch.CALL, "madvise", (0, 0, 8)),  # MADV_FREE
    (launch.CALL, "setitimer", (0, 0, 0)),  # ITIMER_REAL
    (launch.CALL, "clock_gettime", (((~1) << 3) | 2, 0)),  # pid 1's CPU clock
    (launch.CALL, "clock_nanosleep", (((~1) << 3) | 2, 0, 1, 0)),
    (launch.WORKER, "mmap", (0, 4096, 0x7, 0x22, -1, 0)),
    (launch.WORKER, "mprotect", (0, 0, 0x5)),
    (launch.WORKER, "prlimit64", (1, 7, 0, 0)),
    (launch.WORKER, "kill", (NO_SUCH_PID, 15)),  # only SIGKILL, for its own zygotes
    (launch.WORKER, "clone", (0x40000000 | SIGCHLD, 0, 0, 0, 0)),  # CLONE_NEWNET
    (launch.WORKER, "clone", (0x10000000 | SIGCHLD, 0, 0, 0, 0)),  # CLONE_NEWUSER
    (launch.WORKER, "clone", (0x00010000 | 0x00000800 | 0x00000100, 0, 0, 0, 0)),  # a thread
    (launch.WORKER, "openat", (AT_FDCWD, 0, 0o1, 0)),  # O_WRONLY
    (launch.WORKER, "openat", (AT_FDCWD, 0, 0o100, 0)),  # O_CREAT
    (launch.WORKER, "socketpair", (2, 1, 0, 0)),  # AF_INET
    (launch.WORKER, "prctl", (15, 0)),  # PR_SET_NAME
]


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe helper, compiled for this run."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip(reason="no C compiler to build tests/security/seccomp_probe.c")
    binary = tmp_path_factory.mktemp("seccomp") / "seccomp_probe"
    subprocess.run([compiler, "-O0", "-o", str(binary), str(HELPER_SOURCE)], check=True)  # noqa: S603
    return binary


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """launch.py's two compiled programs, as files the helper loads."""
    worker, call = launch.native_filters(JailLayers())
    folder = tmp_path_factory.mktemp("bpf")
    paths = {launch.WORKER: folder / "worker.bpf", launch.CALL: folder / "call.bpf"}
    paths[launch.WORKER].write_bytes(worker)
    paths[launch.CALL].write_bytes(call)
    return paths


def _run(helper: Path, program: Path, name: str, args: Sequence[int]) -> int:
    number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
    argv = [str(helper), str(program), str(number), *(str(a) for a in args)]
    return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode  # noqa: S603


def _names(scope: str) -> set[str]:
    return {name for name, where, _ in launch.SYSCALLS if scope == launch.WORKER or where == launch.CALL}


def _assert_allowed(code: int, name: str) -> None:
    # rt_sigreturn with no signal frame faults (SIGSEGV) after the filter let it through.
    expected = -signal.SIGSEGV if name == "rt_sigreturn" else 0
    assert code == expected, f"{name} was refused (exit {code})"


def test_every_row_has_a_case() -> None:
    assert _names(launch.WORKER) == set(ALLOWED_ARGS)


@pytest.mark.parametrize("scope", [launch.WORKER, launch.CALL])
def test_every_allowed_syscall_returns(helper: Path, programs: dict[str, Path], scope: str) -> None:
    for name in sorted(_names(scope)):
        for args in ALLOWED_ARGS[name]:
            _assert_allowed(_run(helper, programs[scope], name, args), name)


def test_worker_only_syscalls_kill_a_process_that_runs_bundle_code(
    helper: Path, programs: dict[str, Path]
) -> None:
    worker_only = _names(launch.WORKER) - _names(launch.CALL)
    # What a zygote must never do: create processes or channels, open files, signal, change itself.
    never = {"clone", "kill", "openat", "prctl", "wait4", "pipe2", "socketpair", "sendmsg", "dup2"}
    assert never <= worker_only
    for name in sorted(worker_only):
        for args in ALLOWED_ARGS[name]:
            code = _run(helper, programs[launch.CALL], name, args)
            assert code == -signal.SIGSYS, f"{name} was not killed under the call filter (exit {code})"


@pytest.mark.parametrize("scope", [launch.WORKER, launch.CALL])
def test_syscalls_outside_the_list_kill(helper: Path, programs: dict[str, Path], scope: str) -> None:
    for name, args in DENIED:
        code = _run(helper, programs[scope], name, args)
        assert code == -signal.SIGSYS, f"{name} was not killed under the {scope} filter (exit {code})"


@pytest.mark.parametrize(("scope", "name", "args"), OUTSIDE_RULE, ids=lambda v: str(v))
def test_arguments_outside_a_rule_kill(
    helper: Path, programs: dict[str, Path], scope: str, name: str, args: Sequence[int]
) -> None:
    assert _run(helper, programs[scope], name, args) == -signal.SIGSYS


@pytest.mark.parametrize("scope", [launch.WORKER, launch.CALL])
def test_clone3_is_refused_softly_so_fork_falls_back_to_clone(
    helper: Path, programs: dict[str, Path], scope: str
) -> None:
    # ENOSYS, not a kill: glibc's fork() then uses clone, whose flags the worker rule can check.
    assert _run(helper, programs[scope], "clone3", (0, 0)) == 0
