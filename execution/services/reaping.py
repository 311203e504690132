"""The reapers (Celery beat): fail runs whose worker was lost, re-enqueue or fail runs left queued."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from execution.events import run_update_with_events
from execution.models import (
    Run,
    RunStatus,
)
from execution.services.run_execution import WORKER_LOST_ERROR
from execution.services.runs import run_enqueue, run_status_event
from execution.write_gate import write_transaction
from lightfast_cloud.errors import error_text
from organizations.quotas import (
    quota_run_ended,
)

logger = logging.getLogger(__name__)


def run_reap_lost(*, now: datetime | None = None) -> int:
    """Fail running runs whose worker stopped heartbeating (`worker_lost`); returns how many."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LIGHTFAST_RUN_STALE_S)
    lost = Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    count = 0
    for run_id in Run.objects.filter(lost, status=RunStatus.RUNNING).values_list("pk", flat=True):
        message = "The worker running this run stopped (crashed or was killed)."
        if _run_end_with_worker_lost(run_id, Q(lost, status=RunStatus.RUNNING), message, now):
            count += 1
    if count:
        logger.warning("reaped %d run(s) whose worker was lost", count)
    return count


def run_reap_queued(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue queued runs no worker claimed in time; fail those queued too long. Returns both counts.

    A run stays `queued` until a worker claims it, holding a concurrent-run slot; if the broker
    lost its task it would hold the slot forever. Re-enqueueing is safe because the claim is a
    conditional UPDATE (a duplicate task finds the run claimed and does nothing). A run still
    queued LIGHTFAST_RUN_QUEUED_MAX_S after it was created fails with `worker_lost`, its slot
    given back by `quota_run_ended` in the same transaction, like every other terminal update.
    """
    now = now or timezone.now()
    give_up = Q(created_at__lt=now - timedelta(seconds=settings.LIGHTFAST_RUN_QUEUED_MAX_S))
    failed = 0
    for run_id in Run.objects.filter(give_up, status=RunStatus.QUEUED).values_list("pk", flat=True):
        message = (
            f"No worker started the run within {settings.LIGHTFAST_RUN_QUEUED_MAX_S:g} s "
            "(its task was lost or the workers are down)."
        )
        if _run_end_with_worker_lost(run_id, Q(give_up, status=RunStatus.QUEUED), message, now):
            failed += 1
    requeued = 0
    unclaimed = Run.objects.filter(
        status=RunStatus.QUEUED, enqueued_at__lt=now - timedelta(seconds=settings.LIGHTFAST_RUN_REQUEUE_S)
    )
    for run in unclaimed.only("pk", "wall_limit_ms", "requeue_count"):
        # Conditional on the count read: of two reapers racing on one run, one re-enqueues it.
        if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED, requeue_count=run.requeue_count).update(
            enqueued_at=now, requeue_count=F("requeue_count") + 1
        ):
            run_enqueue(run)
            requeued += 1
    if failed or requeued:
        logger.warning("queued runs: %d re-enqueued, %d failed after waiting too long", requeued, failed)
    return {"requeued": requeued, "failed": failed}


def _run_end_with_worker_lost(run_id: uuid.UUID, still: Q, message: str, now: datetime) -> bool:
    """Fail one run with `worker_lost` if it still matches `still`; gives back its slot. True if it ended."""
    with write_transaction():
        ended = run_update_with_events(
            run_id,
            [
                ("error", {"errorText": error_text(WORKER_LOST_ERROR, message)}),
                run_status_event(RunStatus.FAILED, (WORKER_LOST_ERROR, message)),
            ],
            where=still,
            changes={
                "status": RunStatus.FAILED,
                "error_type": WORKER_LOST_ERROR,
                "error_message": message,
                "finished_at": now,
            },
        )
        if ended is None:
            return False
        quota_run_ended(run_id=run_id)
        return True
