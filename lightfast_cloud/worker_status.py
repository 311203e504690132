"""Sandbox status of each Celery worker, published to the cache for `/healthz`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.core.cache import cache

from lightfast_cloud.outages import Outage, loop_forever

logger = logging.getLogger(__name__)

STATUS_TTL_S = 45
_stop = threading.Event()


def status_key(hostname: str) -> str:
    """Cache key holding one worker's sandbox status."""
    return f"worker-sandbox:{hostname}"


def sandbox_status_for(hostname: str) -> dict[str, Any] | None:
    """The last status `hostname` published, or None when it published none recently."""
    value = cache.get(status_key(hostname))
    return value if isinstance(value, dict) else None


def sandbox_status_publish(hostname: str) -> dict[str, Any]:
    """Publish this process's sandbox pool status under `hostname` now; raises when redis is away."""
    from execution.sandbox.api import get_backend
    from execution.sandbox.errors import SandboxError

    try:
        status: dict[str, Any] = {"ok": True, **get_backend().status()}
    except SandboxError as exc:
        status = {"ok": False, "error": exc.to_dict()}
    status["published_at"] = time.time()
    cache.set(status_key(hostname), status, timeout=STATUS_TTL_S)
    return status


def _publish_forever(hostname: str) -> None:
    # Redis away (a refused connection, a timeout while it is paused) or anything else: the thread
    # keeps publishing once it is back; /healthz reports redis itself meanwhile.
    every: float = settings.LIGHTFAST_WORKER_STATUS_EVERY_S
    outage = Outage("sandbox status publishing (redis)", logger=logger, max_delay_s=every)
    loop_forever(lambda: sandbox_status_publish(hostname), outage=outage, interval_s=every, stop=_stop)


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    hostname = getattr(sender, "hostname", None) or "worker"
    threading.Thread(target=_publish_forever, args=(hostname,), name="sandbox-status", daemon=True).start()


@worker_shutdown.connect
def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    _stop.set()
