"""Sandbox status of each Celery worker, published to the cache for `/healthz`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.core.cache import cache

logger = logging.getLogger(__name__)

PUBLISH_EVERY_S = 10.0
STATUS_TTL_S = 45
_stop = threading.Event()


def status_key(hostname: str) -> str:
    """Cache key holding one worker's sandbox status."""
    return f"worker-sandbox:{hostname}"


def sandbox_status_for(hostname: str) -> dict[str, Any] | None:
    """The last status `hostname` published, or None when it published none recently."""
    value = cache.get(status_key(hostname))
    return value if isinstance(value, dict) else None


def _publish_forever(hostname: str) -> None:
    from execution.sandbox.api import get_backend
    from execution.sandbox.errors import SandboxError

    while not _stop.is_set():
        try:
            backend = get_backend()
            status: dict[str, Any] = {"ok": True, **backend.status()}
        except SandboxError as exc:
            status = {"ok": False, "error": exc.to_dict()}
        status["published_at"] = time.time()
        try:
            cache.set(status_key(hostname), status, timeout=STATUS_TTL_S)
        except OSError as exc:  # redis away: /healthz reports redis itself
            logger.warning("could not publish sandbox status: %s", exc)
        _stop.wait(PUBLISH_EVERY_S)


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    hostname = getattr(sender, "hostname", None) or "worker"
    threading.Thread(target=_publish_forever, args=(hostname,), name="sandbox-status", daemon=True).start()


@worker_shutdown.connect
def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    _stop.set()
