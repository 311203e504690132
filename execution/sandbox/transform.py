"""Bundle transform: checks an uploaded ESM bundle and turns it into the script the sandbox engine evaluates.

esbuild (the pinned npm package) runs once per bundle version as a subprocess with a time limit and no
file access (every import is external). The result is a function expression

    (function (require, module, exports) { ...CommonJS translation of the bundle... })

which the engine calls with the runtime's module table; the bundle's exports end up on
`module.exports` (`default`, or agents exported by name). An inline source map in the upload is read
by esbuild and composed into `source_map`, which maps positions in `script` back to the author's
sources (line 1 columns are shifted by len(WRAPPER_PREFIX)).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execution.sandbox.errors import INVALID_BUNDLE, SYNTAX_ERROR, SandboxError

MAX_BUNDLE_BYTES = 10 * 1024 * 1024

# The modules the sandbox runtime provides (execution/sandbox/js/src/lightfast.js).
ALLOWED_IMPORTS: frozenset[str] = frozenset(
    {
        "lightfast/client",
        "lightfast/agent",
        "lightfast/tool",
        "zod",
        "zod/v3",
        "zod/v4",
        "ai",
        "@ai-sdk/gateway",
        "@ai-sdk/openai",
        "@ai-sdk/anthropic",
    }
)

WRAPPER_PREFIX = "(function (require, module, exports) {"
WRAPPER_SUFFIX = "\n})"

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ESBUILD = PROJECT_ROOT / "node_modules" / ".bin" / "esbuild"
SOURCE_NAME = "bundle.mjs"

_ERROR_RE = re.compile(
    r"\[ERROR\] (?P<text>.+?)\n\n\s+(?:<stdin>|" + re.escape(SOURCE_NAME) + r"):(?P<line>\d+):(?P<col>\d+):"
)
_MAP_COMMENT_RE = re.compile(r"\n//# sourceMappingURL=[^\n]*\s*$")


@dataclass
class TransformedBundle:
    """A bundle ready for the engine: the script, its source map, and facts about the upload."""

    script: str
    source_map: dict[str, Any] | None
    sha256: str
    bytes: int
    imports: list[str] = field(default_factory=list)


def transform(
    source: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES, timeout_s: float = 10
) -> TransformedBundle:
    """Check and convert an uploaded bundle; raise SandboxError (invalid_bundle / syntax_error)."""
    text = _decode(source, max_bytes=max_bytes)
    with tempfile.TemporaryDirectory(prefix="lf-transform-") as tmp:
        workdir = Path(tmp)
        _run_esbuild(text, workdir=workdir, timeout_s=timeout_s)
        meta = json.loads((workdir / "meta.json").read_text(encoding="utf-8"))
        imports = _check_imports(meta)
        output = (workdir / "out.js").read_text(encoding="utf-8")
        source_map = json.loads((workdir / "out.js.map").read_text(encoding="utf-8"))
    output = _MAP_COMMENT_RE.sub("\n", output)
    return TransformedBundle(
        script=WRAPPER_PREFIX + output + WRAPPER_SUFFIX,
        source_map=source_map,
        sha256=hashlib.sha256(source).hexdigest(),
        bytes=len(source),
        imports=imports,
    )


def _decode(source: bytes, *, max_bytes: int) -> str:
    """Return the upload as text, or raise invalid_bundle for empty, oversized or non-UTF-8 data."""
    if not isinstance(source, bytes | bytearray):
        raise SandboxError(INVALID_BUNDLE, "the bundle must be bytes")
    if len(source) == 0:
        raise SandboxError(INVALID_BUNDLE, "the bundle is empty")
    if len(source) > max_bytes:
        raise SandboxError(
            INVALID_BUNDLE,
            f"the bundle is {len(source)} bytes, more than the limit of {max_bytes}",
            {"bytes": len(source), "max_bytes": max_bytes},
        )
    try:
        text = bytes(source).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SandboxError(
            INVALID_BUNDLE,
            f"the bundle is not UTF-8 text (invalid byte at offset {exc.start})",
            {"offset": exc.start},
        ) from None
    if "\x00" in text:
        # The engine reads source as a C string: a NUL would silently cut the script short.
        raise SandboxError(
            INVALID_BUNDLE,
            "the bundle contains NUL bytes (binary data, not JavaScript)",
            {"offset": text.index("\x00")},
        )
    if not text.strip():
        raise SandboxError(INVALID_BUNDLE, "the bundle is empty")
    return text


def _run_esbuild(text: str, *, workdir: Path, timeout_s: float) -> None:
    """Run esbuild over the text in an empty directory; raise classified errors for bad input."""
    args = [
        str(ESBUILD),
        "--bundle",
        "--format=cjs",
        "--platform=neutral",
        # Every import stays external: esbuild never reads a file named by the bundle.
        "--external:*",
        "--target=es2022",
        f"--sourcefile={SOURCE_NAME}",
        "--sourcemap=external",
        "--metafile=meta.json",
        "--outfile=out.js",
        "--log-level=error",
        "--log-limit=5",
        "--color=false",
    ]
    try:
        proc = subprocess.run(
            args,
            input=text.encode("utf-8"),
            cwd=workdir,
            capture_output=True,
            timeout=timeout_s,
            env={"PATH": "/usr/bin:/bin"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SandboxError(
            INVALID_BUNDLE, f"transforming the bundle took longer than {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise SandboxError("sandbox_crash", f"esbuild could not be started: {exc}") from None
    if proc.returncode == 0:
        return
    stderr = proc.stderr.decode("utf-8", "replace")
    match = _ERROR_RE.search(stderr)
    if match is None:
        raise SandboxError(INVALID_BUNDLE, "the bundle could not be transformed", {"esbuild": stderr[-2000:]})
    message = match.group("text").strip()
    # esbuild counts columns from 0; editors and the API count from 1.
    detail = {"line": int(match.group("line")), "column": int(match.group("col")) + 1}
    code = INVALID_BUNDLE if "not supported" in message else SYNTAX_ERROR
    raise SandboxError(code, f"{message} (line {detail['line']}, column {detail['column']})", detail)


def _check_imports(meta: dict[str, Any]) -> list[str]:
    """Return the bundle's imports in order; raise invalid_bundle naming any that are not allowed."""
    imports: list[str] = []
    for entry in meta.get("inputs", {}).values():
        for item in entry.get("imports", []):
            path = str(item.get("path", ""))
            if path not in imports:
                imports.append(path)
    refused = [path for path in imports if path not in ALLOWED_IMPORTS]
    if refused:
        names = ", ".join(f'"{path}"' for path in refused)
        raise SandboxError(
            INVALID_BUNDLE,
            f"the bundle imports {names}, which the sandbox does not provide",
            {"imports": refused, "allowed": sorted(ALLOWED_IMPORTS)},
        )
    return imports


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def original_position(source_map: dict[str, Any], line: int, column: int) -> dict[str, Any] | None:
    """Map a 1-based line/column of the script to {source, line, column} in the author's sources."""
    mappings = str(source_map.get("mappings", ""))
    sources = source_map.get("sources") or []
    if line == 1:
        column -= len(WRAPPER_PREFIX)
    target_col = column - 1
    src = src_line = src_col = 0
    best: tuple[int, int, int] | None = None
    for index, group in enumerate(mappings.split(";")):
        gen_col = 0
        for segment in group.split(","):
            if not segment:
                continue
            values = _vlq_decode(segment)
            gen_col += values[0]
            if len(values) >= 4:
                src += values[1]
                src_line += values[2]
                src_col += values[3]
                if index == line - 1 and gen_col <= target_col:
                    best = (src, src_line, src_col)
        if index >= line - 1:
            break
    if best is None or best[0] >= len(sources):
        return None
    return {"source": sources[best[0]], "line": best[1] + 1, "column": best[2] + 1}


def _vlq_decode(segment: str) -> list[int]:
    """Decode one base64 VLQ source map segment."""
    values: list[int] = []
    shift = value = 0
    for char in segment:
        digit = _B64[char]
        value += (digit & 31) << shift
        if digit & 32:
            shift += 5
        else:
            values.append(-(value >> 1) if value & 1 else value >> 1)
            shift = value = 0
    return values
