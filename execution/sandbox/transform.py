"""Bundle transform: checks an uploaded ESM bundle and turns it into the script the sandbox engine evaluates.

esbuild (the pinned npm package) runs once per bundle version, jailed like the sandbox runner
(`jail.tool_jail`: own network namespace, rlimits on memory and CPU, no uid, no environment, and a
seccomp filter under which every file open fails): it gets the bundle on stdin and answers on stdout
through its service protocol (`esbuild_service`), so it needs no file at all. The result is a function
expression

    (function (require, module, exports) { ...CommonJS translation of the bundle... })

which the engine calls with the runtime's module table; the bundle's exports end up on
`module.exports` (`default`, or agents exported by name). An inline (`data:`) source map in the
upload is read by esbuild and composed into `source_map`, which maps positions in `script` back to
the author's sources (line 1 columns are shifted by len(WRAPPER_PREFIX)); any other source map
reference is neutralized before esbuild sees the text (`neutralize_source_map_references`).
Errors carry a message and the line:column in the upload, never esbuild's own output.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from execution.sandbox import esbuild_service
from execution.sandbox.errors import (
    CPU_LIMIT,
    INVALID_BUNDLE,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    SANDBOX_CRASH,
    SYNTAX_ERROR,
    TIMEOUT,
    SandboxError,
)

MAX_BUNDLE_BYTES = 10 * 1024 * 1024
# esbuild's heap budget (GOMEMLIMIT; RLIMIT_DATA is 1.5x it plus Go's own): a 10 MB bundle peaks at ~530 MB.
TRANSFORM_MEMORY_MB = 512

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

# The Node built-ins the runtime offers, each also as `node:NAME` (js/src/node/index.js).
NODE_MODULES: tuple[str, ...] = (
    "assert",
    "assert/strict",
    "buffer",
    "crypto",
    "events",
    "path",
    "path/posix",
    "process",
    "stream",
    "stream/promises",
    "string_decoder",
    "timers",
    "timers/promises",
    "url",
    "util",
    "util/types",
)
ALLOWED_IMPORTS = (
    ALLOWED_IMPORTS | frozenset(NODE_MODULES) | frozenset(f"node:{name}" for name in NODE_MODULES)
)

# Node built-ins that stay refused, with the reason an uploader is told (the runtime's require
# gives the same reasons: js/src/node/index.js REFUSED).
_NO_FILES = "bundles have no file system; use fetch for remote data, or put the data in the bundle"
_NO_SOCKETS = "bundles have no sockets; use fetch (http and https to the organization's allowed hosts)"
_NO_PROCESSES = "bundles cannot start processes or threads; a tool call runs on one thread"
_NO_CODE = "bundles cannot load or evaluate other code"
_NO_HOST = "bundles do not see the machine they run on"
NODE_REFUSED: dict[str, str] = {
    "fs": _NO_FILES,
    "fs/promises": _NO_FILES,
    "child_process": _NO_PROCESSES,
    "cluster": _NO_PROCESSES,
    "worker_threads": _NO_PROCESSES,
    "net": _NO_SOCKETS,
    "tls": _NO_SOCKETS,
    "http": _NO_SOCKETS,
    "https": _NO_SOCKETS,
    "http2": _NO_SOCKETS,
    "dgram": _NO_SOCKETS,
    "dns": _NO_SOCKETS,
    "dns/promises": _NO_SOCKETS,
    "vm": _NO_CODE,
    "module": _NO_CODE,
    "repl": _NO_CODE,
    "inspector": _NO_CODE,
    "os": _NO_HOST,
    "v8": _NO_HOST,
    "tty": _NO_HOST,
    "readline": _NO_HOST,
    "perf_hooks": "use the global performance object",
    "async_hooks": "the sandbox does not track asynchronous context",
    "zlib": "compression is not offered in the sandbox",
}

WRAPPER_PREFIX = "(function (require, module, exports) {"
WRAPPER_SUFFIX = "\n})"

SOURCE_NAME = "bundle.mjs"
_OUTFILE = "/out.js"
_BUILD_FLAGS = (
    "--bundle",
    "--format=cjs",
    "--platform=neutral",
    # Every import stays external: esbuild never resolves a module named by the bundle.
    "--external:*",
    "--target=es2022",
    f"--sourcefile={SOURCE_NAME}",
    "--sourcemap=external",
    "--metafile",
    f"--outfile={_OUTFILE}",
    # Messages come back structured in the response; nothing is printed.
    "--log-level=silent",
    "--log-limit=5",
    "--color=false",
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
    source: bytes,
    *,
    max_bytes: int = MAX_BUNDLE_BYTES,
    timeout_s: float = 10,
    memory_mb: int = TRANSFORM_MEMORY_MB,
    use_inline_source_map: bool = True,
) -> TransformedBundle:
    """Check and convert an uploaded bundle; raise SandboxError (invalid_bundle / syntax_error / limits).

    `use_inline_source_map=False` ignores a `data:` source map in the upload: the same script, with
    a map into the upload itself (locate.py asks for it to place an error in the uploaded file).
    """
    text = _decode(source, max_bytes=max_bytes)
    prepared = neutralize_source_map_references(text, keep_data_url=use_inline_source_map)
    result = _run_esbuild(prepared, timeout_s=timeout_s, memory_mb=memory_mb)
    files = {str(item.get("path")): item.get("contents") or b"" for item in result.get("outputFiles") or []}
    try:
        meta = json.loads(result.get("metafile") or b"{}")
        output = bytes(files[_OUTFILE]).decode("utf-8")
        source_map = json.loads(bytes(files[_OUTFILE + ".map"]))
    except (KeyError, ValueError, TypeError):
        raise SandboxError(SANDBOX_CRASH, "the bundle transform returned an incomplete result") from None
    imports = _check_imports(meta)
    output = _MAP_COMMENT_RE.sub("\n", output)
    return TransformedBundle(
        script=WRAPPER_PREFIX + output + WRAPPER_SUFFIX,
        source_map=source_map,
        sha256=hashlib.sha256(source).hexdigest(),
        bytes=len(source),
        imports=imports,
    )


# --- Source map references -------------------------------------------------------------------------
#
# esbuild follows a `//# sourceMappingURL=` (or `//@`, `/*# */`, `/*@ */`) comment anywhere in the
# file, the last one winning, to a file path or file:// URL. Only inline `data:` maps are kept: every
# other reference in a comment is defused in place (same length, so positions do not move), and a
# final reference is appended that esbuild cannot follow anywhere, so that even a comment this
# scanner misreads is overridden. Text in strings, templates and regular expressions is left alone.

_MENTION_RE = re.compile("sourcemappingurl", re.IGNORECASE)
_DEFUSED = "sourceMappingOFF"
# What esbuild accepts as a pragma: `#` or `@`, one space, the name, `=`, the URL up to whitespace.
_DATA_PRAGMA_RE = re.compile(r"[#@] sourceMappingURL=(data:\S*)")
# A data: URL esbuild refuses to decode: it warns and uses no map, and reads nothing.
_NO_MAP_URL = "data:application/json;base64,!"
_LINE_TERMINATORS = "\n\r\u2028\u2029"
# Code up to the next `/` or template, strings included (a `/` or a backtick in a string is text).
# Inside a template's `${...}` braces stop a run too: the `}` that closes it resumes the template.
_STRINGS = r"""'(?:[^'\\\n\r]|\\[\s\S])*'?|"(?:[^"\\\n\r]|\\[\s\S])*"?"""
_RUN_RE = re.compile(rf"""(?:[^/'"`]+|{_STRINGS})+""")
_RUN_IN_TEMPLATE_RE = re.compile(rf"""(?:[^/'"`{{}}]+|{_STRINGS})+""")
_LINE_COMMENT_RE = re.compile(r"//[^\n\r\u2028\u2029]*")
_BLOCK_COMMENT_RE = re.compile(r"/\*[\s\S]*?(?:\*/|\Z)")
_LAST_WORD_RE = re.compile(r"[\w$\u0080-\uffff]+$")
_SPACE = " \t\n\r\v\f\u00a0\u2028\u2029\ufeff"
_TEMPLATE_CHUNK_RE = re.compile(r"(?:[^`\\$]|\\[\s\S]|\$(?!\{))*(?P<end>`|\$\{|\Z)")
_REGEX_RE = re.compile(
    r"/(?:[^/\\\[\n\r\u2028\u2029]|\\[^\n\r\u2028\u2029]"  # a character or an escape
    r"|\[(?:[^\]\\\n\r\u2028\u2029]|\\[^\n\r\u2028\u2029])*\])+"  # or a class, where / is literal
    r"/[\w$]*"
)
# After these words a `/` starts a regular expression, after other words it divides.
_KEYWORDS_BEFORE_EXPRESSION = frozenset(
    {
        "return",
        "typeof",
        "instanceof",
        "in",
        "of",
        "new",
        "delete",
        "void",
        "throw",
        "case",
        "do",
        "else",
        "yield",
        "await",
    }
)


def neutralize_source_map_references(text: str, *, keep_data_url: bool = True) -> str:
    """Return the text with every non-`data:` source map reference defused and a final safe one appended.

    With `keep_data_url=False` an inline `data:` map is defused too (esbuild then maps to the text itself).
    """
    # str.lower + `in` is ~20x faster than the case-insensitive regex on a large bundle.
    if "sourcemappingurl" not in text.lower():
        return text + "\n//# sourceMappingURL=" + _NO_MAP_URL + "\n"
    pieces: list[str] = []
    last = 0
    data_url = ""
    for start, end in _comment_spans(text):
        comment = text[start:end]
        if _MENTION_RE.search(comment) is None:
            continue
        body = comment[2:-2] if comment.startswith("/*") and comment.endswith("*/") else comment[2:]
        pragma = _DATA_PRAGMA_RE.match(body)
        if pragma is not None and not body[pragma.end() :].strip():
            data_url = pragma.group(1)
            if comment.startswith("//"):
                # Moved to the end below, so that it is the one esbuild reads.
                comment = "//" + body[: pragma.start(1)]
        pieces.append(text[last:start])
        pieces.append(_MENTION_RE.sub(_DEFUSED, comment))
        last = end
    pieces.append(text[last:])
    pieces.append("\n//# sourceMappingURL=" + ((data_url if keep_data_url else "") or _NO_MAP_URL) + "\n")
    return "".join(pieces)


def _comment_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) of every comment, as a JavaScript lexer would find them (best effort).

    Python only steps at slashes, backticks and (inside `${...}`) braces; everything between is
    one regex match, so a 10 MB bundle scans in a fraction of a second.
    """
    spans: list[tuple[int, int]] = []
    # Braces open inside template substitutions; "`" marks a `${`, whose `}` resumes the template.
    stack: list[str] = []
    regex_allowed = True
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == "/":
            following = text[pos + 1 : pos + 2]
            comment = (
                _LINE_COMMENT_RE if following == "/" else _BLOCK_COMMENT_RE if following == "*" else None
            )
            if comment is not None:
                end = comment.match(text, pos).end()  # type: ignore[union-attr]
                spans.append((pos, end))
                pos = end
                continue
            regex = _REGEX_RE.match(text, pos) if regex_allowed else None
            pos = regex.end() if regex is not None else pos + 1
            regex_allowed = regex is None
            continue
        if char == "`" or (char == "}" and stack and stack[-1] == "`"):
            if char == "}":
                stack.pop()
            chunk = _TEMPLATE_CHUNK_RE.match(text, pos + 1)
            assert chunk is not None  # noqa: S101 - the pattern can match the empty string
            if chunk.group("end") == "${":
                stack.append("`")
            regex_allowed = chunk.group("end") == "${"
            pos = chunk.end()
            continue
        if stack and char in "{}":
            if char == "{":
                stack.append("{")
            else:
                stack.pop()
            regex_allowed = True
            pos += 1
            continue
        run = (_RUN_IN_TEMPLATE_RE if stack else _RUN_RE).match(text, pos)
        assert run is not None  # noqa: S101 - every other character starts a run
        regex_allowed = _regex_allowed_after(text, pos, run.end(), regex_allowed)
        pos = run.end()
    return spans


def _regex_allowed_after(text: str, start: int, end: int, before: bool) -> bool:
    """Whether a `/` after the code text[start:end] starts a regular expression (rather than dividing)."""
    # Only the tail matters: a keyword is short (a longer word cut at the tail is no keyword).
    tail_start = max(start, end - 80)
    code = text[tail_start:end].rstrip(_SPACE)
    if not code:
        return before
    last = code[-1]
    if last in ")]'\"":
        return False
    word = _LAST_WORD_RE.search(code)
    if word is not None:
        whole = word.start() > 0 or tail_start == start
        return whole and word.group() in _KEYWORDS_BEFORE_EXPRESSION
    return True


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


def _run_esbuild(text: str, *, timeout_s: float, memory_mb: int) -> dict[str, Any]:
    """Build the text with the jailed esbuild; return its response or raise a classified error."""
    try:
        outcome = esbuild_service.build(
            text.encode("utf-8"),
            flags=_BUILD_FLAGS,
            timeout_s=timeout_s,
            cpu_seconds=max(1, math.ceil(timeout_s)),
            memory_mb=memory_mb,
            max_output_bytes=64 * 1024 * 1024 + 16 * len(text),
        )
    except esbuild_service.ToolFailure as failure:
        raise _classified_failure(failure, timeout_s=timeout_s, memory_mb=memory_mb) from None
    errors = outcome.get("errors") or []
    if errors:
        raise _classified_message(errors)
    return outcome


def _classified_failure(
    failure: esbuild_service.ToolFailure, *, timeout_s: float, memory_mb: int
) -> SandboxError:
    """The error an uploader sees when esbuild itself did not finish (its output is only logged)."""
    if failure.reason == "timeout":
        return SandboxError(TIMEOUT, f"transforming the bundle took longer than {timeout_s:g} s")
    if failure.reason == "cpu_limit":
        return SandboxError(CPU_LIMIT, "transforming the bundle used more CPU time than allowed")
    if failure.reason == "memory_limit":
        return SandboxError(
            MEMORY_LIMIT,
            "transforming the bundle needed more memory than allowed",
            {"memory_mb": memory_mb},
        )
    if failure.reason == "output_limit":
        return SandboxError(OUTPUT_LIMIT, "the transformed bundle is larger than allowed")
    return SandboxError(SANDBOX_CRASH, "the bundle transform failed")


def _classified_message(errors: list[Any]) -> SandboxError:
    """A syntax_error / invalid_bundle for esbuild's first error, located in the upload.

    esbuild's text is passed on only for an error located in the upload itself (it quotes the
    upload's own tokens); anything located elsewhere gets a fixed message.
    """
    first = errors[0] if isinstance(errors[0], dict) else {}
    location = first.get("location") if isinstance(first.get("location"), dict) else None
    if location is None or location.get("file") != SOURCE_NAME:
        return SandboxError(INVALID_BUNDLE, "the bundle could not be transformed", {"errors": len(errors)})
    message = str(first.get("text") or "invalid JavaScript").strip()[:300]
    line = int(location.get("line") or 0)
    # esbuild counts columns in UTF-8 bytes from 0; editors and the API count characters from 1.
    line_text = str(location.get("lineText") or "").encode("utf-8")
    column = len(line_text[: int(location.get("column") or 0)].decode("utf-8", "ignore")) + 1
    detail = {"line": line, "column": column}
    code = INVALID_BUNDLE if "not supported" in message else SYNTAX_ERROR
    return SandboxError(code, f"{message} (line {line}, column {column})", detail)


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
        reasons: list[str] = []
        for path in refused:
            bare = path.removeprefix("node:")
            if bare in NODE_REFUSED and f"`{bare}`" not in " ".join(reasons):
                reasons.append(f"`{bare}` is not available in the sandbox: {NODE_REFUSED[bare]}")
        why = ("; ".join(reasons) + ". ") if reasons else ""
        raise SandboxError(
            INVALID_BUNDLE,
            f"the bundle imports {names}, which the sandbox does not provide. {why}"
            f"Node modules offered: {', '.join(NODE_MODULES)} (also as node:NAME)",
            {
                "imports": refused,
                "allowed": sorted(ALLOWED_IMPORTS),
                "reasons": {
                    path: NODE_REFUSED[path.removeprefix("node:")]
                    for path in refused
                    if path.removeprefix("node:") in NODE_REFUSED
                },
            },
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
