"""Process jail for sandbox workers: uid drop, rlimits, no_new_privs, seccomp, netns, fds, env.

Every layer can be switched off on its own (``JailLayers``) so tests can prove each
one separately. ``apply_jail`` runs inside the worker after its imports and returns
the state of each layer: ``"on"``, ``"off"`` (disabled by configuration) or
``"unavailable: <reason>"``. Per-call children tighten the jail further with
``apply_call_child_jail`` (no processes, no file opens, per-call CPU/AS rlimits).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyseccomp as seccomp

NOBODY_UID = 65534
NOBODY_GID = 65534

_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# Namespace-creating clone flags: a worker may fork its zygotes, never new namespaces.
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

# Denied in every worker (and, through filter stacking, in every child of it).
WORKER_DENIED_SYSCALLS = (
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "execve",
    "execveat",
    "vfork",
    "fork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "swapon",
    "swapoff",
    "reboot",
    "sethostname",
    "setdomainname",
    "acct",
    "quotactl",
    "open_by_handle_at",
    "name_to_handle_at",
    "syslog",
    "iopl",
    "ioperm",
    "mknod",
    "mknodat",
    "personality",
)
# Added in each per-call child: it runs only already-loaded code, so it needs no new
# processes, no file opens and no signals to anything (workers of every organization share
# one uid). This Python runner keeps denylists: CPython, its extension modules and glibc reach
# far more syscalls than the C runner, on paths a trace cannot exhaust, so an allowlist would
# kill calls on rare paths. The native runner (the default) uses allowlists: native/launch.py.
CALL_CHILD_DENIED_SYSCALLS = ("clone", "open", "openat", "openat2", "creat", "kill", "tkill", "tgkill")

_libc = ctypes.CDLL(None, use_errno=True)


class JailUnavailable(Exception):
    """A required jail layer cannot be applied on this host."""

    code = "sandbox_crash"


@dataclass(frozen=True)
class JailLayers:
    """Which jail layers a worker applies; all on by default."""

    drop_uid: bool = True
    rlimits: bool = True
    no_new_privs: bool = True
    seccomp: bool = True
    netns: bool = True
    close_fds: bool = True
    clear_env: bool = True

    @classmethod
    def only(cls, *names: str) -> JailLayers:
        """Layers with only the named ones switched on (for tests proving one layer)."""
        unknown = set(names) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown jail layers: {sorted(unknown)}")
        return cls(**{f.name: f.name in names for f in fields(cls)})

    @classmethod
    def none(cls) -> JailLayers:
        """No layer at all (tests use it as the control case)."""
        return cls.only()


@dataclass(frozen=True)
class JailConfig:
    """Everything a worker needs to jail itself; travels to the runner as JSON in argv."""

    layers: JailLayers = field(default_factory=JailLayers)
    uid: int = NOBODY_UID
    gid: int = NOBODY_GID
    address_space_mb: int = 4096
    cpu_seconds: int = 86_400
    open_files: int = 256
    processes: int = 1024

    def to_json(self) -> str:
        """Serialise for the runner's command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> JailConfig:
        """Parse what `to_json` produced."""
        data = json.loads(text)
        return cls(**{**data, "layers": JailLayers(**data.get("layers", {}))})


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _close_inherited_fds() -> None:
    keep = {0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError as exc:
                # The directory listing's own descriptor is already gone by now.
                if exc.errno != errno.EBADF:
                    raise


def _set_rlimit(kind: int, value: int) -> None:
    resource.setrlimit(kind, (value, value))


def _apply_rlimits(config: JailConfig) -> None:
    _set_rlimit(resource.RLIMIT_AS, config.address_space_mb * 1024 * 1024)
    _set_rlimit(resource.RLIMIT_CPU, config.cpu_seconds)
    _set_rlimit(resource.RLIMIT_FSIZE, 0)
    _set_rlimit(resource.RLIMIT_NOFILE, config.open_files)
    _set_rlimit(resource.RLIMIT_NPROC, config.processes)
    _set_rlimit(resource.RLIMIT_CORE, 0)


def _build_filter(denied: tuple[str, ...], *, set_nnp: bool, allow_fork: bool) -> seccomp.SyscallFilter:
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    flt.set_attr(seccomp.Attr.CTL_NNP, 1 if set_nnp else 0)
    for name in denied:
        try:
            flt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except OSError:
            # libseccomp does not know this syscall on this kernel/arch: nothing to deny.
            continue
    # glibc falls back to clone() when clone3() reports ENOSYS; clone's flags are
    # visible to the filter (clone3's are behind a pointer).
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    if not allow_fork:
        # A call child may read and lower its own limits, never another process's.
        flt.add_rule(seccomp.ERRNO(errno.EPERM), "prlimit64", seccomp.Arg(0, seccomp.NE, 0))
    if allow_fork:
        for flag in _CLONE_NAMESPACE_FLAGS:
            flt.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    return flt


def _load_filter(denied: tuple[str, ...], *, set_nnp: bool, allow_fork: bool) -> None:
    _build_filter(denied, set_nnp=set_nnp, allow_fork=allow_fork).load()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _PipeFile:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


_call_child_bpf: bytes | None = None


def export_bpf(flt: seccomp.SyscallFilter) -> bytes:
    """The compiled BPF program of a filter (an array of struct sock_filter)."""
    read_fd, write_fd = os.pipe()
    try:
        flt.export_bpf(_PipeFile(write_fd))
        os.close(write_fd)
        write_fd = -1
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    return b"".join(chunks)


def precompile_call_child_filter() -> None:
    """Compile the per-call filter once in the worker: libseccomp takes ~2 ms per compile."""
    global _call_child_bpf
    # Only the additions: the worker's filter stays in force underneath, and a smaller
    # program attaches faster (attaching is per call).
    _call_child_bpf = export_bpf(_build_filter(CALL_CHILD_DENIED_SYSCALLS, set_nnp=True, allow_fork=False))


def _load_call_child_filter() -> None:
    if _call_child_bpf is None:
        raise OSError(errno.ENOSYS, "the worker's seccomp filter is not in force")
    program = ctypes.create_string_buffer(_call_child_bpf, len(_call_child_bpf))
    fprog = _SockFprog(len(_call_child_bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_SECCOMP: {os.strerror(err)}")


def _load_worker_filter(layers: JailLayers) -> None:
    precompile_call_child_filter()
    _load_filter(WORKER_DENIED_SYSCALLS, set_nnp=layers.no_new_privs, allow_fork=True)


def _drop_uid(config: JailConfig) -> None:
    os.setgroups([])
    os.setgid(config.gid)
    os.setuid(config.uid)
    if os.getuid() != config.uid or os.geteuid() != config.uid:
        raise OSError(errno.EPERM, "uid drop did not stick")


def apply_jail(config: JailConfig, *, defer_seccomp: bool = False) -> dict[str, str]:
    """Jail the current process as configured; return each layer's state.

    With `defer_seccomp` the filter is not loaded here (its state is "deferred"): the native
    runner this process execve()s installs it after its own start (execve is denied under it).
    """
    layers = config.layers
    status: dict[str, str] = {}

    def attempt(name: str, enabled: bool, step: Any) -> None:
        if not enabled:
            status[name] = "off"
            return
        try:
            step()
        except (OSError, ValueError) as exc:
            status[name] = f"unavailable: {exc}"
        else:
            status[name] = "on"

    def clear_env() -> None:
        os.environ.clear()

    def netns() -> None:
        if _libc.unshare(_CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")

    def drop_uid() -> None:
        if os.geteuid() != 0:
            raise OSError(errno.EPERM, f"not root (uid {os.geteuid()}), cannot switch to uid {config.uid}")
        _drop_uid(config)

    def no_new_privs() -> None:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        # Also hides /proc/<pid>/mem and blocks attaching from other workers of the same uid.
        _prctl(_PR_SET_DUMPABLE, 0)

    attempt("clear_env", layers.clear_env, clear_env)
    attempt("close_fds", layers.close_fds, _close_inherited_fds)
    attempt("netns", layers.netns, netns)
    attempt("rlimits", layers.rlimits, lambda: _apply_rlimits(config))
    # The filter goes on while still root so it can load without no_new_privs when
    # that layer is off; it denies nothing the uid drop needs.
    if defer_seccomp and layers.seccomp:
        status["seccomp"] = "deferred"
    else:
        attempt(
            "seccomp",
            layers.seccomp,
            lambda: _load_worker_filter(layers),
        )
    attempt("drop_uid", layers.drop_uid, drop_uid)
    attempt("no_new_privs", layers.no_new_privs, no_new_privs)
    return status


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent exits (no orphans)."""
    _prctl(_PR_SET_PDEATHSIG, 9)


def current_vsize() -> int:
    """This process's virtual memory size in bytes (what RLIMIT_AS counts)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


# How long past its CPU limit a call child may run before the kernel's profiling timer kills it.
CPU_BACKSTOP_MS = 60


def apply_call_child_jail(layers: JailLayers, *, cpu_ms: int, memory_mb: int, vsize: int) -> None:
    """Tighten a freshly forked per-call child: CPU/AS/process rlimits and a stricter filter.

    `vsize` is the parent's size at fork time, measured once by the parent: reading
    /proc here would cost a fifth of a millisecond per call.
    """
    if layers.rlimits:
        cpu_s = -(-cpu_ms // 1000) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        # The engine's interrupt handler stops JS at the CPU limit, but one native builtin
        # (JSON.parse or String.prototype.repeat on tens of MB) never checks it. A profiling
        # timer kills the child CPU_BACKSTOP_MS later whatever it is doing (SIGPROF's default
        # action), so a call overruns its limit by a bounded amount; the parent reports cpu_limit.
        signal.signal(signal.SIGPROF, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_PROF, (cpu_ms + CPU_BACKSTOP_MS) / 1000)
        headroom = (max(2 * memory_mb, 128) + 128) * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = vsize + headroom if hard == resource.RLIM_INFINITY else min(vsize + headroom, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    if layers.seccomp:
        # Filters stack: this one adds to the worker's, it can never loosen it.
        _load_call_child_filter()


_last_status: dict[str, Any] = {}


def record_status(status: dict[str, Any]) -> None:
    """Remember the jail status reported by the pool's workers (for /healthz)."""
    _last_status.clear()
    _last_status.update(status)


def sandbox_status() -> dict[str, Any]:
    """Jail status for /healthz: layers of the running pool, or 'not started'."""
    if not _last_status:
        return {"started": False}
    return {"started": True, **_last_status}


def run_probe(name: str, args: dict[str, Any], *, host: Any = None) -> Any:
    """Test-only look at the jail from inside a call child (enabled by the runner's --test-probes)."""

    def attempt(action: Any) -> str:
        try:
            action()
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return "ok"

    def connect() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect((args["host"], int(args["port"])))

    def read_file() -> None:
        with open(args["path"], "rb") as handle:
            handle.read(1)

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    def open_fds() -> list[int]:
        found = []
        for fd in range(0, 256):
            try:
                os.fstat(fd)
            except OSError:
                continue
            found.append(fd)
        return found

    def fetch() -> Any:
        fetch_id = host.start_fetch(args["request"])
        while True:
            for done_id, result in host.poll(1.0):
                if done_id == fetch_id:
                    return result

    def spin() -> None:
        while True:
            pass

    probes: dict[str, Any] = {
        "fetch": fetch,
        "spin": spin,
        "sleep": lambda: time.sleep(float(args["seconds"])),
        # A real fault: a call child may not send signals, not even to itself.
        "crash": lambda: ctypes.string_at(8, 1),
        "exit": lambda: os._exit(int(args.get("code", 7))),
        "env": lambda: dict(os.environ),
        "ids": lambda: {
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
        },
        "fds": open_fds,
        "rlimits": lambda: {
            kind: list(resource.getrlimit(getattr(resource, f"RLIMIT_{kind.upper()}")))
            for kind in ("as", "cpu", "fsize", "nofile", "nproc", "core")
        },
        "socket": lambda: attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "connect": lambda: attempt(connect),
        "read_file": lambda: attempt(read_file),
        "fork": lambda: attempt(fork),
        "execve": lambda: attempt(lambda: os.execv("/nonexistent/probe", ["probe"])),  # noqa: S606
        "itimer": lambda: signal.getitimer(signal.ITIMER_PROF)[0],
        "status": lambda: {
            line.split(":")[0]: line.split(":", 1)[1].strip()
            for line in open("/proc/self/status").read().splitlines()  # noqa: SIM115
            if line.startswith(("NoNewPrivs", "Seccomp"))
        },
    }
    return probes[name]()


# --- Helper tools the host execs on untrusted input (esbuild over an uploaded bundle) ---------------

# A tool is fed on stdin and answers on stdout, so any file open is something its input asked
# for: it fails with ENOENT, which tools (and Go's runtime at start) treat as "no such file".
TOOL_FILE_SYSCALLS = ("open", "openat", "openat2", "creat", "open_by_handle_at")
# The worker denylist minus execve, which the jailed child still needs once to become the tool.
TOOL_DENIED_SYSCALLS = tuple(
    name for name in WORKER_DENIED_SYSCALLS if name not in ("execve", "open_by_handle_at")
)

_CLONE_NEWUSER = 0x10000000
_tool_bpf: bytes | None = None
_tool_netns_fd: int | None = None
_tool_netns_lock = threading.Lock()


def _tool_netns() -> int | None:
    """A descriptor of one empty network namespace all tools join (None: this process cannot make one).

    Creating a namespace costs ~7 ms per exec (measured); joining one with setns costs next to
    nothing. A short-lived thread unshares its own network namespace (namespaces are per thread,
    the process keeps its network) and the descriptor keeps it alive. Tools share it, but each has
    only a loopback that is down, and the filter denies socket() anyway.
    """
    global _tool_netns_fd
    with _tool_netns_lock:
        if _tool_netns_fd is None and os.geteuid() == 0:
            made: list[int] = []

            def make() -> None:
                if _libc.unshare(_CLONE_NEWNET) == 0:
                    made.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))

            thread = threading.Thread(target=make, name="tool-netns")
            thread.start()
            thread.join()
            _tool_netns_fd = made[0] if made else -1
        return _tool_netns_fd if _tool_netns_fd is not None and _tool_netns_fd >= 0 else None


def _tool_filter_program() -> bytes:
    """The tool's compiled filter, built once per process (libseccomp takes ~2 ms per compile)."""
    global _tool_bpf
    if _tool_bpf is None:
        flt = _build_filter(TOOL_DENIED_SYSCALLS, set_nnp=True, allow_fork=True)
        for name in TOOL_FILE_SYSCALLS:
            try:
                flt.add_rule(seccomp.ERRNO(errno.ENOENT), name)
            except OSError:
                continue
        _tool_bpf = export_bpf(flt)
    return _tool_bpf


def tool_jail(config: JailConfig, *, data_mb: int | None = None) -> Any:
    """A `preexec_fn` that jails a child before it execs a helper tool: the worker's layers, no file opens.

    Netns (an empty network namespace: the shared one of `_tool_netns`, else its own, with a user
    namespace when not root), rlimits from
    `config` (RLIMIT_CPU hard limit one second past the soft one: SIGKILL) plus RLIMIT_DATA when
    `data_mb` is given (the memory cap that suits Go, whose address space is mostly reservations
    RLIMIT_AS would count), no_new_privs plus a
    filter that denies what workers may not do and answers every file open with ENOENT, uid drop
    when root, death with the parent. Everything it needs is built here, in the parent: the child
    of a threaded process must not import, compile or lock anything before exec. A mandatory layer
    that fails raises in the child, so Popen fails instead of running the tool unjailed; netns is
    best effort because the filter denies socket() anyway. The environment is the caller's `env=`.
    """
    layers = config.layers
    bpf = _tool_filter_program() if layers.seccomp else b""
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    as_bytes = config.address_space_mb * 1024 * 1024
    data_bytes = resource.RLIM_INFINITY if data_mb is None else data_mb * 1024 * 1024
    is_root = os.geteuid() == 0
    netns_fd = _tool_netns() if layers.netns else None
    unshare = _libc.unshare
    setns = _libc.setns
    prctl = _libc.prctl

    # `_program` is what fprog points at: bound here so it lives as long as the function.
    def jail_child(_program: Any = program) -> None:
        if netns_fd is not None:
            if setns(netns_fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")
        elif layers.netns and unshare(_CLONE_NEWNET) != 0 and not is_root:
            unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
        if layers.rlimits:
            resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
            resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
            resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_seconds, config.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
            resource.setrlimit(resource.RLIMIT_NOFILE, (config.open_files, config.open_files))
            resource.setrlimit(resource.RLIMIT_NPROC, (config.processes, config.processes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if bpf:
            if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
            if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
        if layers.drop_uid and is_root:
            _drop_uid(config)
        # After the uid drop, which clears it.
        if prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_PDEATHSIG")

    return jail_child
