"""Build the real-world corpus and name the bundles the runtime benchmarks use, with their streams tool.

Run from the project root: `.venv/bin/python benchmarks/realworld_bundles.py [--copy-to DIR]`.
Prints one JSON object: {"largest": {...}, "cli_shaped": {...}}, each with the bundle's name, path,
bytes and the (agent, tool, input) of its streams-heavy tool. The bundles are built by esbuild from
the real packages in package.json with the Lightfast CLI's options (tests/realworld/corpus.py) and
cached under $LIGHTFAST_DATA_DIR/realworld-corpus/ (default var/test/). In Python:
`from tests.realworld.corpus import benchmark_bundles`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copy-to", type=Path, help="also copy the two bundles into this directory")
    args = parser.parse_args()
    from tests.realworld.corpus import benchmark_bundles

    bundles = benchmark_bundles()
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for info in bundles.values():
            target = args.copy_to / Path(info["path"]).name
            shutil.copyfile(info["path"], target)
            info["path"] = str(target)
    print(json.dumps(bundles, indent=2))


if __name__ == "__main__":
    main()
