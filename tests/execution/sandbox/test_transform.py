"""The bundle transform: UTF-8 and size checks, syntax errors, import allow-list, source maps."""

from __future__ import annotations

import base64
import json

import pytest

from execution.sandbox.errors import SandboxError
from execution.sandbox.transform import ALLOWED_IMPORTS, original_position, transform
from tests.execution.sandbox.engine_harness import bundle_bytes


def _error(source: bytes, **kwargs: object) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        transform(source, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_weather_bundle_becomes_a_wrapped_script():
    bundle = transform(bundle_bytes("weather.mjs"))
    assert bundle.script.startswith("(function (require, module, exports) {")
    assert bundle.script.rstrip().endswith("})")
    assert "\nexport " not in bundle.script and "module.exports = " in bundle.script
    assert set(bundle.imports) == {
        "lightfast/client",
        "lightfast/agent",
        "lightfast/tool",
        "@ai-sdk/gateway",
        "zod",
    }
    assert bundle.bytes == len(bundle_bytes("weather.mjs"))
    assert len(bundle.sha256) == 64
    assert bundle.source_map and bundle.source_map["version"] == 3


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (b"", "empty"),
        (b"   \n\t", "empty"),
        (bundle_bytes("hostile/not-utf8.mjs"), "not UTF-8"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xa0\xb1\xc2\xd3garbage", "not UTF-8"),
        (b"export default 1;\x00\x01\x02", "NUL"),
    ],
)
def test_non_text_uploads_are_invalid_bundles(source, fragment):
    error = _error(source)
    assert error.code == "invalid_bundle"
    assert fragment in error.message


def test_oversized_bundle_is_refused_before_esbuild_runs():
    error = _error(b"// x\n" * 100, max_bytes=100)
    assert error.code == "invalid_bundle"
    assert error.detail["max_bytes"] == 100


def test_syntax_error_reports_line_and_column():
    error = _error(bundle_bytes("hostile/syntax-error.mjs"))
    assert error.code == "syntax_error"
    assert error.detail["line"] == 3
    # `tools` starts at the 66th character of line 3 (1-based).
    assert error.detail["column"] == 66
    assert "tools" in error.message


def test_node_builtins_are_refused_by_name():
    error = _error(bundle_bytes("hostile/node-builtins.mjs"))
    assert error.code == "invalid_bundle"
    assert error.detail["imports"] == ["fs", "child_process"]
    assert '"fs"' in error.message and '"child_process"' in error.message


@pytest.mark.parametrize(
    "statement",
    [
        'import os from "node:os";',
        'import x from "/etc/passwd";',
        'import y from "./local.js";',
        'import "data:text/javascript,export default 1";',
        'const p = import("net");',
        'const cp = require("child_process");',
        'export * from "lodash";',
    ],
)
def test_every_import_outside_the_allow_list_is_refused(statement):
    source = f'{statement}\nimport {{ createLightfast }} from "lightfast/client";\nexport default 1;\n'
    error = _error(source.encode())
    assert error.code == "invalid_bundle"
    assert error.detail["imports"], error.message


def test_all_runtime_modules_are_allowed():
    lines = [f'import * as m{i} from "{name}";' for i, name in enumerate(sorted(ALLOWED_IMPORTS))]
    bundle = transform(
        (
            "\n".join(lines)
            + "\nexport default ["
            + ",".join(f"m{i}" for i in range(len(ALLOWED_IMPORTS)))
            + "];\n"
        ).encode()
    )
    assert set(bundle.imports) == ALLOWED_IMPORTS


def test_top_level_await_is_an_invalid_bundle_with_position():
    error = _error(b'import { z } from "zod";\nawait 1;\nexport default z;\n')
    assert error.code == "invalid_bundle"
    assert error.detail["line"] == 2


def test_inline_source_map_is_stripped_and_composed():
    original = {
        "version": 3,
        "sources": ["src/tools/weather.ts"],
        "sourcesContent": ["export const boom = () => { throw new Error('x'); };\n"],
        "names": [],
        # line 1 col 0 -> source 0 line 0 col 0; line 2 col 0 -> source 0 line 0 col 27
        "mappings": "AAAA;AAA2B",
    }
    comment = base64.b64encode(json.dumps(original).encode()).decode()
    source = (
        "var boom = () => {\n  throw new Error('x');\n};\nexport default boom;\n"
        f"//# sourceMappingURL=data:application/json;base64,{comment}\n"
    ).encode()
    bundle = transform(source)
    assert "sourceMappingURL" not in bundle.script
    assert bundle.source_map is not None
    assert bundle.source_map["sources"] == ["src/tools/weather.ts"]
    line = next(i for i, text in enumerate(bundle.script.split("\n"), 1) if "throw new Error" in text)
    column = bundle.script.split("\n")[line - 1].index("throw") + 1
    position = original_position(bundle.source_map, line, column)
    assert position is not None and position["source"] == "src/tools/weather.ts"


def test_large_bundle_with_inline_source_map_is_fast_enough_to_transform():
    # ~1.2 MB of code plus a ~1 MB inline map, like a real CLI bundle with dependencies inlined.
    body = "".join(f"var v{i} = {{ id: {i}, name: 'item {i}', tags: ['a', 'b'] }};\n" for i in range(25000))
    fake_map = {"version": 3, "sources": ["big.ts"], "sourcesContent": [body], "names": [], "mappings": ""}
    comment = base64.b64encode(json.dumps(fake_map).encode()).decode()
    source = (
        'import { createLightfast } from "lightfast/client";\n'
        + body
        + "export default 1;\n//# sourceMappingURL=data:application/json;base64,"
        + comment
        + "\n"
    ).encode()
    assert len(source) > 2_000_000
    bundle = transform(source, timeout_s=10)
    assert "sourceMappingURL" not in bundle.script
    assert bundle.imports == ["lightfast/client"]


def test_transform_time_limit_is_enforced():
    error = _error(bundle_bytes("weather.mjs"), timeout_s=0.000001)
    assert error.code == "timeout"
    assert "longer than" in error.message
