"""The upload transform (esbuild) reads no host file; its output never reaches uploaders.

A bundle's `sourceMappingURL` comment made esbuild open any host file (its error quoted the first
line, the API returned esbuild's stderr) or read /dev/zero until 1.2 GB. Now every non-`data:`
reference is defused before esbuild runs, esbuild runs jailed with every file open failing, and
errors carry a classified message with the line:column in the upload.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from execution.sandbox import esbuild_service, jail
from execution.sandbox.errors import SandboxError
from execution.sandbox.transform import (
    _BUILD_FLAGS,
    SOURCE_NAME,
    _classified_failure,
    _classified_message,
    neutralize_source_map_references,
    transform,
)
from tests.bundles import sample, stored_files, upload

# Every test here gets a private media directory (settings.MEDIA_ROOT).
pytestmark = pytest.mark.usefixtures("media_root")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOL_OUTPUT_MARKS = ("[ERROR]", "✘", "│", "╵", "esbuild", "node_modules", "goroutine", str(PROJECT_ROOT))


@pytest.fixture
def secret_files() -> Iterator[dict[str, object]]:
    """World-readable files outside any private directory: only the fix keeps esbuild from them.

    `text` is a plain line (what an error would quote); `map` is a valid source map whose
    sourcesContent carries the secret (what a composed map would store).
    """
    token = "LF-SECRET-" + secrets.token_hex(12)
    directory = Path(tempfile.mkdtemp(prefix="lf-secret-", dir="/tmp"))
    directory.chmod(0o755)
    text = directory / "secret.txt"
    text.write_text(f"{token} first line of a host file\nsecond line\n")
    source_map = directory / "secret.map"
    source_map.write_text(
        json.dumps(
            {"version": 3, "sources": [token], "sourcesContent": [token], "names": [], "mappings": "AAAA"}
        )
    )
    for path in (text, source_map):
        path.chmod(0o644)
    yield {"token": token, "text": text, "map": source_map}
    shutil.rmtree(directory)


def _references(path: Path) -> dict[str, str]:
    """Every spelling of a reference to `path` that esbuild (0.28) or a browser honours or might."""
    relative = "../" * 12 + str(path).lstrip("/")
    return {
        "line-hash": f"//# sourceMappingURL={path}",
        "line-at": f"//@ sourceMappingURL={path}",
        "block-hash": f"/*# sourceMappingURL={path} */",
        "block-at": f"/*@ sourceMappingURL={path} */",
        "file-url": f"//# sourceMappingURL=file://{path}",
        "file-url-localhost": f"//# sourceMappingURL=file://localhost{path}",
        "file-url-percent": f"//# sourceMappingURL=file://{str(path).replace('secret', '%73ecret')}",
        "relative": f"//# sourceMappingURL={relative}",
        "relative-dot": "//# sourceMappingURL=./" + relative,
        "extra-spaces": f"//#  sourceMappingURL = {path}",
        "upper-case": f"//# SOURCEMAPPINGURL={path}",
    }


def _bundles(path: Path) -> dict[str, str]:
    """The references placed where a lexer still sees a comment: end, middle, odd line terminators."""
    head = 'import { createLightfast } from "lightfast/client";\nexport const a = 1;\n'
    tail = "export default createLightfast;\n"
    bundles = {}
    for name, reference in _references(path).items():
        bundles[f"{name}-end"] = head + tail + reference + "\n"
        bundles[f"{name}-middle"] = head + reference + "\n" + tail
    ref = f"//# sourceMappingURL={path}"
    bundles["crlf"] = (head + tail).replace("\n", "\r\n") + ref + "\r\n"
    bundles["cr-only"] = (head + tail).replace("\n", "\r") + ref + "\r"
    bundles["line-separator"] = head + tail + "// x\u2028" + ref + "\u2029const z = 1;\n"
    bundles["after-block-comment-same-line"] = head + tail + f"/* x */ {ref}\n"
    bundles["data-then-file"] = (
        head + tail + "//# sourceMappingURL=data:application/json;base64,e30=\n" + ref + "\n"
    )
    bundles["regex-then-comment"] = head + "const r = /[/]/g;\n" + ref + "\n" + tail
    bundles["template-then-comment"] = head + "const t = `a${1}b`;\n" + ref + "\n" + tail
    # A string the scanner could take for the start of one: the comment after it is still found.
    bundles["quote-in-regex"] = head + "const q = /'/;\n" + ref + "\n" + tail
    return bundles


def _assert_no_leak(token: str, response: object, root: Path) -> None:
    body = response.content.decode("utf-8", "replace")  # type: ignore[attr-defined]
    assert token not in body
    for name in stored_files(root):
        assert token.encode() not in (root / name).read_bytes(), name


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["text", "map"])
def test_every_source_map_spelling_reads_no_host_file_through_the_api(alice, settings, secret_files, target):
    token = str(secret_files["token"])
    path = Path(str(secret_files[target]))
    for index, (name, text) in enumerate(_bundles(path).items()):
        response = upload(alice.keys["all"], text.encode(), slug=f"b{index}")
        assert response.status_code == 201, (name, response.content)
        _assert_no_leak(token, response, Path(settings.MEDIA_ROOT))
    # The control: the same files are readable to anybody on this host, so only the fix kept them out.
    assert token in path.read_text()


@pytest.mark.parametrize("name", ["dev-zero", "file-url", "block", "proc-environ"])
def test_dev_zero_and_proc_references_are_never_read(name):
    reference = {
        "dev-zero": "//# sourceMappingURL=/dev/zero",
        "file-url": "//# sourceMappingURL=file:///dev/zero",
        "block": "/*# sourceMappingURL=/dev/zero */",
        "proc-environ": "//# sourceMappingURL=/proc/self/environ",
    }[name]
    bundle = transform(f"export default 1;\n{reference}\n".encode())
    # Had esbuild read /dev/zero it would have been killed at its memory limit (memory_limit).
    assert bundle.source_map is not None and bundle.source_map["sources"] == [SOURCE_NAME]


def _raw_build(
    source: bytes,
    *,
    layers: jail.JailLayers | None = None,
    memory_mb: int = 512,
    resolve_dir: str | None = None,
) -> dict:
    """esbuild through the jail exactly as uploads run it, but without defusing the references first."""
    config = esbuild_service.jail_config(cpu_seconds=10)
    if layers is not None:
        config = jail.JailConfig(layers=layers, cpu_seconds=10, open_files=32)
    request = {
        "command": "build",
        "key": 0,
        "entries": [],
        "flags": list(_BUILD_FLAGS),
        "write": False,
        "stdinContents": source,
        # Uploads pass none (esbuild then resolves no relative reference); "/" makes them resolve.
        "stdinResolveDir": resolve_dir,
        "absWorkingDir": "/",
        "nodePaths": [],
        "context": False,
    }
    return esbuild_service._exchange(
        esbuild_service.service_argv(),
        esbuild_service.encode_packet(0, is_request=True, value=request),
        config=config,
        data_mb=esbuild_service.data_limit_mb(memory_mb),
        env=esbuild_service.go_env(memory_mb),
        timeout_s=20,
        max_output_bytes=1 << 26,
    )


def test_jailed_esbuild_cannot_open_a_host_file_even_when_asked(secret_files):
    token = str(secret_files["token"])
    source = f"export default 1;\n//# sourceMappingURL=file://{secret_files['text']}\n".encode()
    jailed = _raw_build(source)
    assert jailed["errors"] == [] and token not in json.dumps(jailed, default=repr)
    # /dev/zero too: without the filter this is the 1.2 GB read.
    assert _raw_build(b"export default 1;\n//# sourceMappingURL=file:///dev/zero\n")["errors"] == []
    # The control: the same jail without its file-open filter reads the file (as uid nobody).
    unfiltered = _raw_build(source, layers=jail.JailLayers(seccomp=False))
    assert token in json.dumps(unfiltered, default=repr)


@pytest.mark.parametrize("target", ["text", "map"])
def test_each_layer_alone_stops_every_spelling(secret_files, target):
    token = str(secret_files["token"])
    bundles = _bundles(Path(str(secret_files[target])))
    unfiltered = jail.JailLayers(seccomp=False)
    # The control: esbuild, jailed but free to open files, reads the secret through these spellings.
    leaked = [
        name
        for name, text in bundles.items()
        if token in json.dumps(_raw_build(text.encode(), layers=unfiltered, resolve_dir="/"), default=repr)
    ]
    assert {
        "line-hash-end",
        "block-at-middle",
        "file-url-end",
        "relative-end",
        "crlf",
        "line-separator",
    } <= set(leaked)
    for name, text in bundles.items():
        # Defusing alone (the jail's file filter off).
        defused = _raw_build(
            neutralize_source_map_references(text).encode(), layers=unfiltered, resolve_dir="/"
        )
        assert token not in json.dumps(defused, default=repr), name
        # The jail alone (nothing defused).
        jailed = _raw_build(text.encode(), resolve_dir="/")
        assert token not in json.dumps(jailed, default=repr), name


@pytest.fixture
def esbuild_child() -> Iterator[subprocess.Popen[bytes]]:
    """A jailed esbuild service process, started exactly as uploads start it, waiting for its request."""
    proc = esbuild_service.spawn(
        esbuild_service.service_argv(),
        config=esbuild_service.jail_config(cpu_seconds=10),
        data_mb=esbuild_service.data_limit_mb(512),
        env=esbuild_service.go_env(512),
    )
    assert proc.stdout is not None
    proc.stdout.read(4)  # its version packet: the runtime is up
    yield proc
    proc.kill()
    proc.communicate()


def test_esbuild_child_runs_jailed(esbuild_child):
    proc_dir = Path(f"/proc/{esbuild_child.pid}")
    status = dict(line.split(":", 1) for line in (proc_dir / "status").read_text().splitlines())
    assert status["Seccomp"].strip() == "2"
    assert status["NoNewPrivs"].strip() == "1"
    if os.geteuid() == 0:
        # Without root there is no uid to drop to, and a network namespace only where user
        # namespaces are allowed: the filter's socket() denial is then what keeps it off the network.
        assert status["Uid"].split() == [str(jail.NOBODY_UID)] * 4
        assert status["CapEff"].strip() == "0000000000000000"
        assert os.readlink(proc_dir / "ns" / "net") != os.readlink("/proc/self/ns/net")
    environ = sorted(item.split(b"=")[0] for item in (proc_dir / "environ").read_bytes().split(b"\0") if item)
    assert environ == [b"GOGC", b"GOMAXPROCS", b"GOMEMLIMIT"]
    limits = (proc_dir / "limits").read_text()
    expected_as = jail.JailConfig().address_space_mb * 1024 * 1024
    expected_data = esbuild_service.data_limit_mb(512) * 1024 * 1024
    assert f"Max address space         {expected_as}" in limits
    assert f"Max data size             {expected_data}" in limits
    assert "Max cpu time              10                   11" in limits
    assert "Max file size             0" in limits


def _run_jailed_python(code: str, layers: jail.JailLayers) -> str:
    """Python under the tool jail (without the file filter: the interpreter must open its modules)."""
    config = jail.JailConfig(layers=layers, address_space_mb=1024, cpu_seconds=10, open_files=64)
    proc = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-I", "-S", "-c", code],
        preexec_fn=jail.tool_jail(config),  # noqa: PLW1509
        env={},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root (or user namespaces) here")
def test_tool_jail_has_no_network():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted: list[object] = []
    server.settimeout(3)
    threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True).start()
    port = server.getsockname()[1]
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(2)\n"
        f"try:\n    s.connect(('127.0.0.1', {port})); print('CONNECTED')\n"
        "except OSError as e:\n    print('REFUSED', e.errno)\n"
    )
    # Python cannot start under the file filter, nor from root's pyenv as nobody: those layers off.
    output = _run_jailed_python(code, jail.JailLayers(seccomp=False, drop_uid=False))
    assert "REFUSED" in output and "CONNECTED" not in output
    server.close()
    assert accepted in ([], [None])


def _accept(server: socket.socket) -> object:
    try:
        return server.accept()
    except OSError:
        return None


def test_tool_filter_denies_socket_and_every_file_open():
    # The filter is loaded in the child before exec, so a dynamically linked program cannot even
    # start: its loader's open of libc fails. esbuild is static and opens nothing it needs.
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "print('started')"],
        preexec_fn=jail.tool_jail(  # noqa: PLW1509
            jail.JailConfig(layers=jail.JailLayers(drop_uid=False), address_space_mb=1024, cpu_seconds=10)
        ),
        env={},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0 and b"started" not in proc.stdout


def test_syntax_error_is_a_message_and_a_position_in_the_upload(alice, settings):
    data = 'import { createLightfast } from "lightfast/client";\nconst é = "ü"; const x = ;\n'.encode()
    response = upload(alice.keys["all"], data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "syntax_error"
    # 1-based characters: the last `;` is the 26th character of line 2 (esbuild counts bytes from 0).
    assert 'const é = "ü"; const x = ;'.rindex(";") + 1 == 26
    assert error["detail"] == {"line": 2, "column": 26}
    assert error["message"] == 'Unexpected ";" (line 2, column 26)'
    for mark in TOOL_OUTPUT_MARKS:
        assert mark not in response.content.decode(), mark
    assert stored_files(Path(settings.MEDIA_ROOT)) == []


def test_error_located_outside_the_upload_gets_a_fixed_message(secret_files):
    # What esbuild says about a file other than the upload (here: a source map it was allowed to
    # read, with the jail's filter off) never reaches the uploader, whatever its text.
    unfiltered = _raw_build(
        f"export default 1;\n//# sourceMappingURL=file://{secret_files['text']}\n".encode(),
        layers=jail.JailLayers(seccomp=False),
    )
    error = _classified_message(unfiltered["errors"])
    assert error.code == "invalid_bundle"
    assert str(secret_files["token"]) not in json.dumps(error.to_dict())
    assert error.message == "the bundle could not be transformed"


def test_dev_zero_read_is_killed_at_the_memory_limit_when_the_filter_is_off():
    # The original bomb (esbuild reading /dev/zero as a source map), with the file filter off:
    # the memory limit alone ends it, classified, long before the 1.2 GB it reached unjailed.
    with pytest.raises(esbuild_service.ToolFailure) as info:
        _raw_build(
            b"export default 1;\n//# sourceMappingURL=file:///dev/zero\n",
            layers=jail.JailLayers(seccomp=False),
            memory_mb=64,
        )
    assert info.value.reason == "memory_limit"


def test_memory_limit_kill_is_classified():
    body = "".join(
        f"export const v{i} = {{ id: {i}, name: 'item {i}', tags: ['a'] }};\n" for i in range(40000)
    )
    with pytest.raises(SandboxError) as info:
        transform(body.encode(), memory_mb=1)
    assert info.value.code == "memory_limit"
    assert info.value.detail == {"memory_mb": 1}
    for mark in TOOL_OUTPUT_MARKS:
        assert mark not in info.value.message


def test_cpu_limit_kill_is_classified():
    # ~21 MB of code takes esbuild well over 2 s of CPU: RLIMIT_CPU (1 s soft, 2 s hard) kills it
    # (8-11 MB sometimes finished within 2 s). The large heap budget keeps the memory limit away.
    body = "".join(
        f"export const v{i} = {{ id: {i}, name: 'item {i}', tags: ['a'] }};\n" for i in range(300000)
    )
    with pytest.raises(esbuild_service.ToolFailure) as info:
        esbuild_service.build(
            body.encode(),
            flags=_BUILD_FLAGS,
            timeout_s=120,
            cpu_seconds=1,
            memory_mb=2048,
            max_output_bytes=1 << 28,
        )
    assert info.value.reason == "cpu_limit"
    error = _classified_failure(info.value, timeout_s=120, memory_mb=2048)
    assert error.code == "cpu_limit"
    assert error.message == "transforming the bundle used more CPU time than allowed"


def test_wall_timeout_is_classified():
    with pytest.raises(SandboxError) as info:
        transform(sample("weather.mjs"), timeout_s=0.001)
    assert info.value.code == "timeout"


def test_string_and_template_literals_keep_their_text():
    literal = "//# sourceMappingURL=/etc/passwd"
    source = (
        f'export const s = "{literal}";\n'
        f"export const t = `\n{literal}\n/*# sourceMappingURL=/etc/hostname */`;\n"
        f"export const r = /\\/\\/# sourceMappingURL=x/;\n"
        "export default s;\n"
    )
    defused = neutralize_source_map_references(source)
    assert defused.startswith(source)
    bundle = transform(source.encode())
    assert f'"{literal}"' in bundle.script
    assert f"`\n{literal}\n/*# sourceMappingURL=/etc/hostname */`" in bundle.script


def test_neutralizing_keeps_every_position():
    source = "a();\n//# sourceMappingURL=/x\n/*# sourceMappingURL=/y */ b();\r\nc(); // sourceMappingURL=z\n"
    defused = neutralize_source_map_references(source)
    assert defused[: len(source)].count("sourceMappingURL") == 0
    assert [len(line) for line in defused[: len(source)].splitlines()] == [
        len(line) for line in source.splitlines()
    ]


def test_inline_data_map_in_the_middle_still_composes():
    original = {
        "version": 3,
        "sources": ["src/agent.ts"],
        "sourcesContent": ["export const x = 1;\n"],
        "names": [],
        "mappings": "AAAA",
    }
    encoded = base64.b64encode(json.dumps(original).encode()).decode()
    reference = f"//# sourceMappingURL=data:application/json;base64,{encoded}"
    source = f"export const x = 1;\n{reference}\nexport default x;\n"
    bundle = transform(source.encode())
    assert bundle.source_map is not None and bundle.source_map["sources"] == ["src/agent.ts"]
    assert "sourceMappingURL" not in bundle.script


def test_sample_bundles_upload_end_to_end(alice, settings):
    for name in ("weather.mjs", "multi-agent.mjs"):
        response = upload(alice.keys["all"], sample(name), slug=name.split(".")[0])
        assert response.status_code == 201, response.content
    stored = stored_files(Path(settings.MEDIA_ROOT))
    assert any(name.endswith(".map") or "map" in name for name in stored), stored
