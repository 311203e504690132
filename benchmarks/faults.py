"""Fault experiments' figures: runs per experiment, stuck runs, lost and duplicated events, as JSON lines.

Runs the fault tests (tests/faults: the launcher's stack under a killed worker, killed sandbox runners,
a paused redis, a database away, lost broker messages and a full sandbox pool) and prints what each
experiment did, then one line with the totals. Run from the project root:
`.venv/bin/python benchmarks/faults.py` (SQLite and a private redis), or with DATABASE_URL and REDIS_URL
set for PostgreSQL and Redis. The exit status is pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lf-faults-") as scratch:
        report = Path(scratch) / "faults.jsonl"
        env = {
            **os.environ,
            "LIGHTFAST_FAULTS_REPORT": str(report),
            "LIGHTFAST_DATA_DIR": os.environ.get("LIGHTFAST_DATA_DIR", str(Path(scratch) / "data")),
        }
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        lines = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    for line in lines:
        print(json.dumps(line))
    totals = {
        "benchmark": "faults",
        "figure": "total",
        "experiments": len(lines),
        "runs": sum(line["runs"] for line in lines),
        "stuck": sum(line["stuck"] for line in lines),
        "lost_events": sum(line["lost_events"] for line in lines),
        "duplicated_events": sum(line["duplicated_events"] for line in lines),
        "tests_passed": result.returncode == 0,
    }
    print(json.dumps(totals))
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
