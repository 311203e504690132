"""Keep the objects a process built at start-up out of the cyclic garbage collector's scans."""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery.signals import worker_ready

logger = logging.getLogger(__name__)


def freeze_startup_objects(what: str) -> None:
    """Collect once, then freeze every object that survived (call when start-up is done)."""
    gc.collect()
    gc.freeze()
    logger.info("%s: %d start-up objects frozen out of garbage collection", what, gc.get_freeze_count())


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    # The worker imported its tasks (and through them the whole project) before it is ready.
    freeze_startup_objects(f"worker {getattr(sender, 'hostname', None) or 'worker'}")
