"""Rate-limit overhead per API request, and the cost of a quota-checked run start. JSON lines.

Run from the project root: `.venv/bin/python benchmarks/limits.py [--requests 5000]`.
Uses a scratch data directory (a private redis unless REDIS_URL is set). "Overhead" is what the
tenant base view adds to a request: the auth-failure check for the client IP plus counting the
organization and its API key (django-ratelimit on the Redis cache), measured in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def emit(**figure: Any) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(figure), flush=True)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99 in milliseconds, rounded to microseconds."""
    ordered = sorted(samples_ms)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("LIGHTFAST_DATA_DIR", tempfile.mkdtemp(prefix="lf-bench-limits-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import RequestFactory

    from lightfast_cloud.embedded_redis import start_embedded_redis
    from organizations.models import ApiKey, Organization
    from organizations.ratelimits import ratelimit_api_request, ratelimit_auth_failures_check

    embedded = start_embedded_redis(settings.DATA_DIR, persistent=False) if settings.REDIS_EMBEDDED else None
    try:
        organization = Organization(slug="bench", name="bench", api_rate=f"{args.requests * 10}/m")
        api_key = ApiKey(organization=organization, lookup_id="benchbenchbe", scopes=["read"])
        factory = RequestFactory()
        samples: list[float] = []
        for index in range(args.requests + 200):
            request = factory.get("/api/v1/organization")
            started = time.perf_counter()
            ratelimit_auth_failures_check(request=request)
            ratelimit_api_request(request=request, organization=organization, api_key=api_key)
            if index >= 200:  # warm-up: connection pools, imports
                samples.append((time.perf_counter() - started) * 1000)
        emit(
            figure="ratelimit_overhead_per_request",
            requests=args.requests,
            redis="embedded unix socket" if embedded else "REDIS_URL",
            **percentiles(samples),
        )
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
