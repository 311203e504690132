"""Celery tasks of the bundles app, on the `introspect` queue (settings route `agents.tasks.*` there)."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from agents.services import bundle_version_introspect, bundle_versions_reap_stale
from execution.sandbox.errors import TIMEOUT, SandboxError

logger = logging.getLogger("agents.tasks")

# The sandbox enforces the introspection limits itself (10 s wall); these catch a stuck host side.
SOFT_TIME_LIMIT_S = 60
HARD_TIME_LIMIT_S = 90


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT_S,
    time_limit=HARD_TIME_LIMIT_S,
    ignore_result=True,
)
def introspect_bundle_version(version_id: int, organization_id: int) -> str:
    """Introspect one version of one organization; a redelivered or duplicate message is a no-op."""
    try:
        version = bundle_version_introspect(version_id=version_id, organization_id=organization_id)
    except SoftTimeLimitExceeded:
        from agents.models import BundleVersion
        from agents.services import bundle_version_finish_introspection

        version = BundleVersion.objects.filter(pk=version_id, organization_id=organization_id).first()
        if version is not None:
            bundle_version_finish_introspection(
                version=version,
                error=SandboxError(TIMEOUT, f"Introspection did not finish within {SOFT_TIME_LIMIT_S} s."),
            )
        return "timeout"
    finally:
        # Piggy-back the reaper on the queue's own traffic: no beat process needed.
        reaped = bundle_versions_reap_stale()
        if reaped:
            logger.warning("re-queued or rejected %d stale introspections", reaped)
    return version.status if version is not None else "skipped"


@shared_task(ignore_result=True)
def reap_stale_introspections() -> int:
    """Periodic safety net (for a beat schedule): versions whose introspection crashed or was never queued."""
    return bundle_versions_reap_stale()
