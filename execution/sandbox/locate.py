"""Where in the upload an error happened: the bundle's stack frames mapped back through its source map.

The runner evaluates a bundle's script under the file name `bundle.js` (`BUNDLE_FILENAME`; the
runtime's own frames are `<input>`), so the first `bundle.js` frame of an error's stack is the
bundle code closest to the failure. `mapped_position` (`transform.original_position` with a
cached index) maps that script position to the uploaded file. When the upload carried an inline
source map, the stored map is composed with it and points into the author's sources instead; the
upload position then comes from the same transform run without that map
(`transform(..., use_inline_source_map=False)`: esbuild's code is the same, only the map differs),
done only here, on the rare failed load, when the upload is at hand.

The stack text is whatever the bundle's error carried (a bundle can rewrite `Error.prototype.stack`);
a forged one only misplaces the bundle's own error, and parsing it is bounded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from execution.sandbox.errors import SandboxError
from execution.sandbox.transform import SOURCE_NAME, WRAPPER_PREFIX, _vlq_decode, transform

BUNDLE_FILENAME = "bundle.js"
_MAX_STACK_CHARS = 20_000
_FRAME_RE = re.compile(
    # "    at name (file:line:column)" or "    at file:line:column"
    r"\((?P<file>[^()\n]*):(?P<line>\d{1,9}):(?P<column>\d{1,9})\)$"
    r"|at (?P<bare>[^\s()]+):(?P<bline>\d{1,9}):(?P<bcolumn>\d{1,9})$"
)
_NOT_DEFINED_RE = re.compile(r"^'?(?P<name>[\w$]{1,100})'? is not defined$")


def script_position(stack: object) -> tuple[int, int] | None:
    """The (line, column) of the first frame in the bundle's script, from a QuickJS stack text."""
    if not isinstance(stack, str):
        return None
    for raw in stack[:_MAX_STACK_CHARS].splitlines():
        match = _FRAME_RE.search(raw.strip())
        if match is None:
            continue
        file = match.group("file") if match.group("file") is not None else match.group("bare")
        if file != BUNDLE_FILENAME:
            continue
        line = int(match.group("line") or match.group("bline"))
        column = int(match.group("column") or match.group("bcolumn"))
        return line, column
    return None


@functools.lru_cache(maxsize=65536)
def _segment(segment: str) -> tuple[int, ...]:
    # Segments repeat a lot ("AAAA", "CAAC", ...): decoded once each.
    return tuple(_vlq_decode(segment))


@functools.lru_cache(maxsize=8)
def _line_starts(mappings: str) -> tuple[tuple[int, int, int], ...]:
    """The (source, line, column) state of the mappings at the start of each generated line.

    Decoding a 1 MB bundle's mappings takes a few hundred ms; this is done once per map and process
    (the bundle cache keeps the same map object), and a lookup then decodes one line.
    """
    states = []
    src = src_line = src_col = 0
    for group in mappings.split(";"):
        states.append((src, src_line, src_col))
        for segment in group.split(","):
            if not segment:
                continue
            values = _segment(segment)
            if len(values) >= 4:
                src += values[1]
                src_line += values[2]
                src_col += values[3]
    return tuple(states)


def mapped_position(source_map: dict[str, Any], line: int, column: int) -> dict[str, Any] | None:
    """`transform.original_position` with a cached index of line starts (same answers)."""
    mappings = source_map.get("mappings")
    sources = source_map.get("sources") or []
    if not isinstance(mappings, str) or line < 1:
        return None
    starts = _line_starts(mappings)
    if line > len(starts):
        return None
    if line == 1:
        column -= len(WRAPPER_PREFIX)
    target_col = column - 1
    # The line's own text: the line-th group (split lazily, only up to it).
    group = mappings.split(";", line)[line - 1]
    src, src_line, src_col = starts[line - 1]
    gen_col = 0
    best = None
    for segment in group.split(","):
        if not segment:
            continue
        values = _segment(segment)
        gen_col += values[0]
        if len(values) >= 4:
            src += values[1]
            src_line += values[2]
            src_col += values[3]
            if gen_col <= target_col:
                best = (src, src_line, src_col)
    if best is None or not 0 <= best[0] < len(sources):
        return None
    return {"source": sources[best[0]], "line": best[1] + 1, "column": best[2] + 1}


def upload_position(
    source_map: dict[str, Any] | None,
    line: int,
    column: int,
    upload: Callable[[], bytes] | None = None,
) -> dict[str, Any]:
    """The position of a script line:column in the upload (`line`, `column`) and, when the upload
    had an inline source map, in the author's sources (`source`, `source_line`, `source_column`)."""
    if not isinstance(source_map, dict):
        return {}
    mapped = mapped_position(source_map, line, column)
    if mapped is None:
        return {}
    if mapped["source"] == SOURCE_NAME:
        return {"line": mapped["line"], "column": mapped["column"]}
    out: dict[str, Any] = {
        "source": str(mapped["source"])[:300],
        "source_line": mapped["line"],
        "source_column": mapped["column"],
    }
    if upload is not None:
        try:
            plain = transform(upload(), use_inline_source_map=False)
        except (SandboxError, OSError):
            return out
        if plain.source_map is not None:
            again = mapped_position(plain.source_map, line, column)
            if again is not None and again["source"] == SOURCE_NAME:
                out = {"line": again["line"], "column": again["column"], **out}
    return out


def located_load_error(
    error: SandboxError,
    source_map: dict[str, Any] | None,
    upload: Callable[[], bytes] | None = None,
) -> SandboxError:
    """`error` (a failed load) with the upload position of its top bundle frame in message and detail.

    A ReferenceError for a missing global says so: it names the global the sandbox does not offer.
    Errors without a bundle frame (limits, syntax errors that carry their own position) come back as they are.
    """
    detail = dict(error.detail or {})
    if "line" in detail or error.code != "invalid_bundle":
        return error
    position = script_position(detail.get("stack"))
    if position is None:
        return error
    where = upload_position(source_map, *position, upload=upload)
    if not where:
        return error
    places = []
    if "line" in where:
        places.append(f"line {where['line']}, column {where['column']}")
    if "source" in where:
        places.append(f"{where['source']}:{where['source_line']}:{where['source_column']}")
    message = f"{error.message} ({'; '.join(places)})"
    missing = _NOT_DEFINED_RE.match(error.message.removeprefix("the bundle threw while loading: "))
    if detail.get("name") == "ReferenceError" and missing is not None:
        name = missing.group("name")
        detail["missing_global"] = name
        message += f": the sandbox runtime has no global {name} (docs/runtime.md lists what it offers)"
    detail.update(where)
    located = SandboxError(error.code, message, detail)
    located.usage = error.usage
    return located


def located_call_error(error: dict[str, Any], source_map: dict[str, Any] | None) -> dict[str, Any]:
    """A tool call's error with `at` (the upload position of its top bundle frame) added to its detail."""
    detail = error.get("detail")
    if not isinstance(detail, dict) or "at" in detail:
        return error
    position = script_position(detail.get("stack"))
    if position is None:
        return error
    where = upload_position(source_map, *position)
    if not where:
        return error
    return {**error, "detail": {**detail, "at": where}}
