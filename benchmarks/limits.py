"""Rate-limit overhead per API request, and the django-ratelimit `get_usage` path it replaced. JSON lines.

Run from the project root: `.venv/bin/python benchmarks/limits.py [--requests 5000]`.
Uses a scratch data directory (a private redis on a unix socket unless REDIS_URL is set).
"Overhead" is what the tenant base view adds to a request: `ratelimit_api_request`, which
checks the client IP's authentication failures and counts the organization and its API key
in one Redis round trip, measured in-process. The reference figure times the path it replaced
(django-ratelimit `get_usage` for the IP check, the organization and the key: ~8 round trips),
interleaved with the first so that both see the same machine load. Redis commands per request
come from the server's INFO commandstats, which also counts the calls a script makes: for the
script path, `evalsha` is the number of round trips and the rest ran inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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


def command_calls(client: Any) -> dict[str, int]:
    """Calls per command the server has run so far (INFO commandstats; scripts' inner calls included)."""
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in client.info("commandstats").items()
    }


def commands_per_call(
    client: Any, path: Callable[[Any], None], factory: Any, *, times: int = 200
) -> dict[str, float]:
    """Redis commands per request through `path`, by command name."""
    before = command_calls(client)
    for _ in range(times):
        path(factory.get("/api/v1/organization"))
    after = command_calls(client)
    after["info"] -= 1  # the second INFO itself
    spent = {name: (count - before.get(name, 0)) / times for name, count in after.items()}
    return {name: round(per_call, 3) for name, per_call in sorted(spent.items()) if per_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("LIGHTFAST_DATA_DIR", tempfile.mkdtemp(prefix="lf-bench-limits-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache
    from django.test import RequestFactory
    from django_ratelimit.core import get_usage

    from lightfast_cloud.embedded_redis import start_embedded_redis
    from organizations.models import ApiKey, Organization
    from organizations.ratelimits import client_ip, ratelimit_api_request

    embedded = start_embedded_redis(settings.DATA_DIR, persistent=False) if settings.REDIS_EMBEDDED else None
    try:
        rate = f"{args.requests * 10}/m"
        organization = Organization(slug="bench", name="bench", api_rate=rate)
        api_key = ApiKey(organization=organization, lookup_id="benchbenchbe", scopes=["read"])
        factory = RequestFactory()

        def current(request: Any) -> None:
            ratelimit_api_request(request=request, organization=organization, api_key=api_key)

        def previous(request: Any) -> None:
            """The replaced path: three get_usage calls (IP read, organization, key)."""
            for group, value, increment, group_rate in (
                ("auth-failures", client_ip(request), False, settings.LIGHTFAST_AUTH_FAILURE_RATE),
                ("organization-ref", organization.public_id, True, rate),
                ("api-key-ref", api_key.lookup_id, True, rate),
            ):
                get_usage(
                    request,
                    group=group,
                    key=lambda _group, _request, value=value: value,
                    rate=group_rate,
                    increment=increment,
                )

        paths: dict[str, Callable[[Any], None]] = {"one_round_trip": current, "get_usage_reference": previous}
        samples: dict[str, list[float]] = {name: [] for name in paths}
        server = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
        commands = {name: commands_per_call(server, path, factory) for name, path in paths.items()}
        for index in range(args.requests + 200):
            for name, path in paths.items():
                request = factory.get("/api/v1/organization")
                started = time.perf_counter()
                path(request)
                if index >= 200:  # warm-up: connection pools, imports
                    samples[name].append((time.perf_counter() - started) * 1000)
        redis = "embedded unix socket" if embedded else "REDIS_URL"
        emit(
            figure="ratelimit_overhead_per_request",
            requests=args.requests,
            redis=redis,
            # Everything else ran inside the script.
            redis_round_trips=round(
                sum(commands["one_round_trip"].get(name, 0) for name in ("evalsha", "eval")), 3
            ),
            redis_commands=commands["one_round_trip"],
            **percentiles(samples["one_round_trip"]),
        )
        emit(
            figure="ratelimit_overhead_per_request_get_usage_reference",
            requests=args.requests,
            redis=redis,
            redis_round_trips=round(sum(commands["get_usage_reference"].values()), 3),
            redis_commands=commands["get_usage_reference"],
            **percentiles(samples["get_usage_reference"]),
        )
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
