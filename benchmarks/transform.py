"""Upload transform latency (esbuild ESM→CJS, jailed); prints one JSON line per bundle.

Run: `.venv/bin/python benchmarks/transform.py [--rounds 30] [--compare GIT_REF]`. Times `transform()`
alone, as an upload runs it, on the sample bundles in ../shared/bundles and a generated ~0.9 MB
bundle. With `--compare`, the transform.py of GIT_REF runs interleaved with this one (same load,
same moment: the machine is shared) and each line carries both medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from execution.sandbox.transform import transform  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "bundles"


def _large_bundle() -> bytes:
    tools = "\n".join(
        f"export function tool{i}(input) {{ const v = input.value * {i}; "
        f"return {{ id: {i}, v, s: 'x{i}'.repeat(3) }}; }}"
        for i in range(8000)
    )
    return ('import { agent } from "lightfast/agent";\n' + tools + "\nexport default agent;\n").encode()


def _transform_at(ref: str) -> Callable[[bytes], Any]:
    """The `transform` function of execution/sandbox/transform.py as it was at git `ref`."""
    source = subprocess.run(  # noqa: S603 - fixed git command
        ["git", "show", f"{ref}:execution/sandbox/transform.py"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    # Placed in the real package directory so that its PROJECT_ROOT (parents[2]) is this checkout.
    with tempfile.NamedTemporaryFile(
        "wb", suffix=".py", prefix="_bench_old_transform_", dir=ROOT / "execution" / "sandbox", delete=False
    ) as handle:
        handle.write(source)
    path = Path(handle.name)
    try:
        spec = importlib.util.spec_from_file_location("_bench_old_transform", path)
        assert spec and spec.loader  # noqa: S101
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        path.unlink()
    return module.transform  # type: ignore[no-any-return]


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    """Time the transform of each bundle (and of the compared version, interleaved)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--compare", metavar="GIT_REF", help="also time transform.py of this git ref")
    args = parser.parse_args()
    variants: dict[str, Callable[[bytes], Any]] = {"current": transform}
    if args.compare:
        variants[args.compare] = _transform_at(args.compare)
    bundles = {path.name: path.read_bytes() for path in sorted(SAMPLES.glob("*.mjs"))}
    bundles["generated-large.mjs"] = _large_bundle()
    for name, data in bundles.items():
        times: dict[str, list[float]] = {label: [] for label in variants}
        for function in variants.values():
            function(data)
        for _ in range(args.rounds):
            for label, function in variants.items():
                started = time.perf_counter()
                function(data)
                times[label].append(time.perf_counter() - started)
        figure: dict[str, Any] = {"figure": "upload_transform", "bundle": name, "bytes": len(data)}
        figure["rounds"] = args.rounds
        for label, values in times.items():
            figure[f"{label}_p50_ms"] = _median_ms(values)
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
