"""Build the sandbox runner image: from the production Dockerfile, or offline from this machine's files.

The offline image holds only what the runner needs: this interpreter (at the same path
as on the host, so it finds its standard library unchanged), the shared libraries
`ldd` lists for it and its extension modules, libseccomp, the quickjs-ng and pyseccomp
modules, the runner's own modules and the generated runtime.js, a passwd entry for the
non-root user, and `ldconfig` with its cache (ctypes finds libseccomp through it). No
shell, no package manager: it is `docker import`ed, never pulled.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile"
IMAGE_REPOSITORY = "lightfast-sandbox-runner"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:latest"
BASE_IMAGE = "python:3.11-slim"
RUNNER_UID = 10001
# What the container's runner needs: the native runner (the entrypoint: `launch` applies the jail
# and execve()s the binary, as in the local pool) and the Python runner's modules, which `launch`
# imports for the jail and the runtime's path; nothing of Django or the host side.
NATIVE_BINARY = "execution/sandbox/native/build/lightfast-runner"
RUNNER_FILES = (
    "execution/__init__.py",
    "execution/sandbox/__init__.py",
    "execution/sandbox/errors.py",
    "execution/sandbox/limits.py",
    "execution/sandbox/protocol.py",
    "execution/sandbox/jail.py",
    "execution/sandbox/runner.py",
    "execution/sandbox/engine.py",
    "execution/sandbox/native/__init__.py",
    "execution/sandbox/native/launch.py",
    NATIVE_BINARY,
    "execution/sandbox/js/dist/runtime.js",
)
VENDORED_MODULES = ("quickjs", "_quickjs", "pyseccomp")
# Extension modules the runner can never need; leaving them out also leaves out their libraries.
_SKIPPED_DYNLOAD = re.compile(r"^(_test|_tkinter|_curses|readline|_ctypes_test|xxlimited|_xxtest|nis|spwd)")
_SKIPPED_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}


class ImageBuildError(Exception):
    """The runner image could not be built (missing runtime.js, library, or engine error)."""

    code = "sandbox_crash"


def interpreter_path() -> Path:
    """The real path of the interpreter the image runs (symlinks resolved)."""
    return Path(os.path.realpath(sys.executable))


def image_entrypoint() -> list[str]:
    """Entrypoint of the offline image: this interpreter jailing itself and becoming the native runner."""
    return [str(interpreter_path()), "-s", "-B", "-m", "execution.sandbox.native.launch"]


def _check_runtime() -> None:
    runtime = PROJECT_ROOT / "execution/sandbox/js/dist/runtime.js"
    if not runtime.exists():
        raise ImageBuildError(f"{runtime} is missing: run `make setup` (npm run build:runtime) first")
    if not (PROJECT_ROOT / NATIVE_BINARY).exists():
        raise ImageBuildError(f"{PROJECT_ROOT / NATIVE_BINARY} is missing: run `make setup` first")


def _copy(source: Path, root: Path, target: Path | None = None) -> None:
    """Copy a file into the root at its own absolute path (or `target`), following symlinks."""
    dest = root / str(target or source).lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(source), dest)


def _merged_usr(path: str) -> str:
    # The image uses Debian's merged /usr: /lib and /lib64 are symlinks into /usr.
    for prefix in ("/lib/", "/lib64/", "/sbin/", "/bin/"):
        if path.startswith(prefix):
            return "/usr" + path
    return path


def _shared_libraries(binaries: list[Path]) -> set[str]:
    """Every library `ldd` lists for the given ELF files (the loader included)."""
    found: set[str] = set()
    for binary in binaries:
        done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            match = re.search(r"(/\S+)\s+\(0x", line)
            if match:
                found.add(match.group(1))
    return found


def rootfs_build(*, dest: Path) -> Path:
    """Assemble the runner's root filesystem under `dest` and return it."""
    _check_runtime()
    dest.mkdir(parents=True, exist_ok=True)
    for link, target in (
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
        ("bin", "usr/bin"),
    ):
        (dest / target).mkdir(parents=True, exist_ok=True)
        if not (dest / link).exists():
            (dest / link).symlink_to(target)
    for name in ("tmp", "proc", "dev", "sys", "etc", "app/vendor"):
        (dest / name).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)

    python = interpreter_path()
    _copy(python, dest)
    elf_files: list[Path] = [python]
    libdir = Path(str(sysconfig.get_config_var("LIBDIR") or ""))
    ldlibrary = str(sysconfig.get_config_var("INSTSONAME") or "")
    if ldlibrary.endswith(".so.1.0") and (libdir / ldlibrary).exists():
        _copy(libdir / ldlibrary, dest, Path(_merged_usr(str(libdir / ldlibrary))))
        elf_files.append(libdir / ldlibrary)

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = Path(str(sysconfig.get_config_var("DESTSHARED")))
    for path in stdlib.rglob("*"):
        relative = path.relative_to(stdlib)
        if relative.parts and relative.parts[0] in _SKIPPED_STDLIB or path.is_dir():
            continue
        if path.is_relative_to(dynload) and _SKIPPED_DYNLOAD.match(path.name):
            continue
        if "config-3" in relative.parts[0]:
            continue
        _copy(path, dest)
        if path.suffix == ".so":
            elf_files.append(path)
    if not dynload.is_relative_to(stdlib):
        for path in dynload.glob("*.so"):
            if not _SKIPPED_DYNLOAD.match(path.name):
                _copy(path, dest)
                elf_files.append(path)

    for name in VENDORED_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ImageBuildError(f"the runner needs the {name!r} module; it is not installed here")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            for path in origin.parent.rglob("*.py"):
                _copy(path, dest, Path("/app/vendor") / name / path.relative_to(origin.parent))
        else:
            _copy(origin, dest, Path("/app/vendor") / origin.name)
            if origin.suffix == ".so":
                elf_files.append(origin)

    seccomp = _find_libseccomp()
    elf_files.append(seccomp)
    elf_files.append(PROJECT_ROOT / NATIVE_BINARY)
    _copy(seccomp, dest, Path(_merged_usr(str(seccomp))))
    for library in _shared_libraries(elf_files):
        _copy(Path(library), dest, Path(_merged_usr(library)))
    ldconfig = Path(shutil.which("ldconfig") or "/sbin/ldconfig")
    _copy(ldconfig, dest, Path("/usr/sbin/ldconfig"))

    for runner_file in RUNNER_FILES:
        _copy(PROJECT_ROOT / runner_file, dest, Path("/app") / runner_file)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(dest / "app")], check=True, capture_output=True
    )

    (dest / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"lightfast:x:{RUNNER_UID}:{RUNNER_UID}:sandbox runner:/nonexistent:/usr/sbin/nologin\n"
        f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (dest / "etc/group").write_text(f"root:x:0:\nlightfast:x:{RUNNER_UID}:\nnogroup:x:65534:\n")
    (dest / "etc/ld.so.conf").write_text(
        "/usr/local/lib\n/usr/lib/x86_64-linux-gnu\n/usr/lib\n"
        + (f"{_merged_usr(str(libdir))}\n" if ldlibrary else "")
    )
    subprocess.run([str(ldconfig), "-r", str(dest)], check=True, capture_output=True)
    return dest


def _find_libseccomp() -> Path:
    done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        match = re.search(r"libseccomp\.so\.2 .*=> (\S+)", line)
        if match and "x86-64" in line:
            return Path(match.group(1))
    for candidate in ("/lib/x86_64-linux-gnu/libseccomp.so.2", "/usr/lib/x86_64-linux-gnu/libseccomp.so.2"):
        if Path(candidate).exists():
            return Path(candidate)
    raise ImageBuildError("libseccomp.so.2 not found on this machine (apt-get install libseccomp2)")


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def image_build_offline(*, client: Any, tag: str = DEFAULT_IMAGE) -> str:
    """Assemble the root filesystem, `docker import` it as `tag`, and return the image id."""
    with tempfile.TemporaryDirectory(prefix="lightfast-rootfs-") as scratch:
        root = rootfs_build(dest=Path(scratch) / "rootfs")
        tar_path = Path(scratch) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as archive:
            for entry in sorted(root.iterdir()):
                archive.add(entry, arcname=entry.name, filter=_root_owned)
        repository, _, version = tag.rpartition(":")
        changes = [
            f"USER {RUNNER_UID}:{RUNNER_UID}",
            "WORKDIR /app",
            "ENV PYTHONPATH=/app:/app/vendor",
            "ENV PYTHONDONTWRITEBYTECODE=1",
            f"ENTRYPOINT {json.dumps(image_entrypoint())}",
            "LABEL lightfast.image=sandbox-runner",
        ]
        client.api.import_image(src=str(tar_path), repository=repository, tag=version, changes=changes)
    return str(client.images.get(tag).id)


def image_build_dockerfile(*, client: Any, tag: str = DEFAULT_IMAGE) -> str:
    """Build the production Dockerfile (pulls the base image) and return the image id."""
    _check_runtime()
    # A context of only the files the Dockerfile copies (the project root holds
    # node_modules and the virtualenv).
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        archive.add(DOCKERFILE, arcname="Dockerfile", filter=_root_owned)
        for relative in RUNNER_FILES:
            archive.add(PROJECT_ROOT / relative, arcname=relative, filter=_root_owned)
    context.seek(0)
    image, _logs = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, pull=False)
    return str(image.id)


def base_image_available(*, client: Any) -> bool:
    """Whether the Dockerfile's base is present locally or can be pulled from a registry."""
    import docker.errors

    try:
        client.images.get(BASE_IMAGE)
        return True
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(BASE_IMAGE)
    except docker.errors.APIError as exc:
        logger.info("base image %s cannot be pulled (%s); building offline", BASE_IMAGE, exc)
        return False
    return True


def image_build(*, client: Any, tag: str = DEFAULT_IMAGE, method: str = "auto") -> tuple[str, str]:
    """Build the runner image by `method` (auto, dockerfile, offline); return (image id, method used)."""
    if method == "auto":
        method = "dockerfile" if base_image_available(client=client) else "offline"
    if method == "dockerfile":
        return image_build_dockerfile(client=client, tag=tag), method
    if method == "offline":
        return image_build_offline(client=client, tag=tag), method
    raise ImageBuildError(f"unknown image build method {method!r} (auto, dockerfile, offline)")
