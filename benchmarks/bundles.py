"""Bundle upload and introspection timings; prints one JSON line per figure.

Run: `LIGHTFAST_DATA_DIR=/tmp/lf-bench .venv/bin/python benchmarks/bundles.py` (needs the built JS runtime).
Measures, for the samples and a generated 1–2 MB CLI-shaped bundle: the esbuild transform, the
sandbox introspection (through the local jail pool, as the Celery task runs it), and the whole
`bundle_upload` service (validation, transform, storage, rows) on a scratch SQLite database.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LIGHTFAST_DATA_DIR", tempfile.mkdtemp(prefix="lf-bench-bundles-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")
os.environ.setdefault("LIGHTFAST_MEDIA_ROOT", tempfile.mkdtemp(prefix="lf-bench-media-"))
# Uploads queue their introspection on commit; here it is timed directly instead.
os.environ.setdefault("CELERY_BROKER_URL", "memory://")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from agents.selectors import INTROSPECT_LIMITS  # noqa: E402
from execution.sandbox import api as sandbox_api  # noqa: E402
from execution.sandbox.transform import transform  # noqa: E402
from tests.agents.cli_bundle import cli_shaped_bundle  # noqa: E402

SHARED = ROOT.parent / "shared" / "bundles"
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def bench_bundle(name: str, data: bytes) -> None:
    transform_times, introspect_times = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        bundle = transform(data, max_bytes=10 * 1024 * 1024, timeout_s=10)
        transform_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        manifest = sandbox_api.introspect(bundle, limits=INTROSPECT_LIMITS)
        introspect_times.append(time.perf_counter() - started)
    total = [a + b for a, b in zip(transform_times, introspect_times, strict=True)]
    emit(figure="bundle_transform_and_introspect", bundle=name, bytes=len(data), rounds=ROUNDS,
         agents=len(manifest["agents"]),
         transform_ms_p50=ms(statistics.median(transform_times)),
         introspect_ms_p50=ms(statistics.median(introspect_times)),
         total_ms_p50=ms(statistics.median(total)), total_ms_max=ms(max(total)),
         first_total_ms=ms(total[0]))


def bench_upload_service(data: bytes) -> None:
    from agents.services import bundle_upload
    from organizations.models import Organization
    from organizations.services import Actor

    call_command("migrate", verbosity=0)
    organization, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    times = []
    for n in range(ROUNDS):
        payload = data + f"\n// round {n} {time.time_ns()}\n".encode()
        started = time.perf_counter()
        bundle_upload(organization=organization, slug="cli-shaped", data=payload, actor=Actor.system("bench"))
        times.append(time.perf_counter() - started)
    emit(figure="bundle_upload_service", bundle="cli-shaped", bytes=len(data), rounds=ROUNDS,
         ms_p50=ms(statistics.median(times)), ms_max=ms(max(times)),
         note="validation + esbuild + storage + rows; introspection is the queued task measured above")


def main() -> None:
    for path in sorted(SHARED.glob("*.mjs")):
        bench_bundle(path.name, path.read_bytes())
    bench_bundle("demo-bundle.mjs", (ROOT / "agents" / "demo" / "demo-bundle.mjs").read_bytes())
    cli = cli_shaped_bundle()
    bench_bundle("cli-shaped (generated)", cli)
    bench_upload_service(cli)


if __name__ == "__main__":
    main()
