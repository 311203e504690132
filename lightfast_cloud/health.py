"""`/healthz`: database, redis, Celery worker and sandbox status as JSON."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from lightfast_cloud import sql
from lightfast_cloud.celery import app as celery_app


def _timed(check: Any) -> dict[str, Any]:
    """Run one check, returning its status, latency and error message."""
    started = time.perf_counter()
    try:
        detail = check() or {}
    except Exception as exc:  # noqa: BLE001 - every failure is reported, classified by its check
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2), **detail}


def _database() -> dict[str, Any]:
    sql.fetch_one("SELECT 1", [])
    return {"vendor": sql.vendor()}


def _redis() -> dict[str, Any]:
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    client.ping()
    return {}


def _worker() -> dict[str, Any]:
    # limit=1 returns as soon as one worker answers instead of waiting out the timeout.
    replies = celery_app.control.ping(timeout=1.0, limit=1)
    if not replies:
        raise RuntimeError("no Celery worker answered a ping within 1 s")
    return {"answered": sorted(name for reply in replies for name in reply)}


def _sandbox(worker: dict[str, Any]) -> dict[str, Any]:
    """The sandbox pool status that the answering worker published."""
    from lightfast_cloud.worker_status import sandbox_status_for

    names = worker.get("answered") or []
    if not names:
        raise RuntimeError("no worker answered, so no sandbox status")
    status = sandbox_status_for(names[0])
    if status is None:
        raise RuntimeError(f"worker {names[0]} has not published a sandbox status yet")
    if not status.get("ok", False):
        raise RuntimeError(f"sandbox unavailable on {names[0]}: {status.get('error')}")
    return {"worker": names[0], "status": status}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Report each dependency; 200 when all are healthy, 503 otherwise."""
    checks = {"database": _timed(_database), "redis": _timed(_redis)}
    if checks["redis"]["ok"]:
        checks["worker"] = _timed(_worker)
        checks["sandbox"] = _timed(lambda: _sandbox(checks["worker"]))
    else:
        # Both go through redis (the broker, the cache): asking would wait on a redis that does not
        # answer (a paused one never times out on the broker's connection), and say nothing new.
        unknown = {"ok": False, "error": "unknown: redis is unavailable"}
        checks["worker"], checks["sandbox"] = dict(unknown), dict(unknown)
    healthy = all(check["ok"] for check in checks.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "checks": checks,
        "sandbox_backend": settings.LIGHTFAST_SANDBOX_BACKEND,
    }
    return JsonResponse(body, status=200 if healthy else 503)
