"""The reapers (Celery beat): retry or fail runs of lost workers; re-enqueue or fail runs left queued."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from execution.events import run_update_with_events
from execution.models import (
    Run,
    RunEvent,
    RunStatus,
)
from execution.services.run_execution import WORKER_LOST_ERROR
from execution.services.runs import run_enqueue, run_status_event
from execution.write_gate import after_commit, write_transaction
from lightfast_cloud.errors import error_text
from organizations.quotas import (
    quota_run_ended,
)

logger = logging.getLogger(__name__)


def run_reap_lost(*, now: datetime | None = None) -> dict[str, int]:
    """Retry or fail running runs whose worker stopped heartbeating; returns how many of each.

    A run whose lost attempt had not started a tool call (no `tool-input-available` recorded: a
    worker writes that event before it calls the sandbox) goes back to the queue for another
    attempt, up to LIGHTFAST_RUN_MAX_ATTEMPTS; any other (a tool may have had effects, or a
    cancel was requested) fails with `worker_lost`. Both are conditional updates: a worker that
    was slow rather than lost either wrote first (the retry sees a new `last_seq` and waits for
    the next pass) or finds its attempt gone and stops (its writes name the attempt).
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LIGHTFAST_RUN_STALE_S)
    lost = Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    failed = retried = 0
    rows = Run.objects.filter(lost, status=RunStatus.RUNNING).values_list(
        "pk", "attempt", "last_seq", "cancel_requested_at"
    )
    for run_id, attempt, last_seq, cancel_requested_at in rows:
        # Conditional on `last_seq` too: the closing events below are read up to it.
        still = Q(lost, status=RunStatus.RUNNING, attempt=attempt, last_seq=last_seq)
        closing, tool_started = _lost_attempt_shape(run_id, last_seq=last_seq)
        message = "The worker running this run stopped (crashed or was killed)"
        if cancel_requested_at is not None:
            message += " while the run was being cancelled."
        elif tool_started:
            message += " after a tool call started; a tool may have had effects, so the run is not run again."
        elif attempt >= settings.LIGHTFAST_RUN_MAX_ATTEMPTS:
            message += f", on each of its {attempt} attempts." if attempt > 1 else "."
        else:
            if _run_requeue_after_worker_lost(run_id, still, closing + [_retry_status(attempt)], now):
                retried += 1
            continue
        if _run_end_with_worker_lost(run_id, still, message, now, closing=closing):
            failed += 1
    if failed or retried:
        logger.warning("runs whose worker was lost: %d retried, %d failed", retried, failed)
    return {"retried": retried, "failed": failed}


def _lost_attempt_shape(run_id: uuid.UUID, *, last_seq: int) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The events that close what the lost attempt left open, and whether it started a tool call.

    Read up to `last_seq`, which the reaper's update is conditional on. The client has seen the
    lost attempt's parts, so they are closed as they stand (`text-end`, `finish-step`) rather than
    taken back: a next attempt streams after them, under new text ids, and its answer is the one
    stored. Seqs only grow, so nothing a client already has is sent again.
    """
    shape = RunEvent.objects.filter(run_id=run_id, seq__lte=last_seq, type__in=_SHAPE_TYPES)
    open_texts: dict[str, None] = {}
    step_open = tool_started = False
    for event_type, payload in shape.order_by("seq").values_list("type", "payload"):
        if event_type == "tool-input-available":
            tool_started = True
        elif event_type == "start":  # an attempt begins: what an earlier one left open was closed then
            open_texts, step_open = {}, False
        elif event_type == "text-start":
            open_texts[str(payload.get("id"))] = None
        elif event_type == "text-end":
            open_texts.pop(str(payload.get("id")), None)
        elif event_type == "start-step":
            step_open = True
        elif event_type == "finish-step":
            step_open = False
    events: list[tuple[str, dict[str, Any]]] = [("text-end", {"id": text_id}) for text_id in open_texts]
    if step_open:
        events.append(("finish-step", {}))
    return events, tool_started


# The event types that say where a lost attempt stood (see _lost_attempt_shape).
_SHAPE_TYPES = ("start", "start-step", "finish-step", "text-start", "text-end", "tool-input-available")


def _retry_status(attempt: int) -> tuple[str, dict[str, Any]]:
    """The `data-status` event of a run queued again after its attempt `attempt` was lost."""
    message = (
        "The worker running this run stopped (crashed or was killed) before it called a tool; "
        f"the run starts again (attempt {attempt + 1} of {settings.LIGHTFAST_RUN_MAX_ATTEMPTS})."
    )
    return run_status_event(
        RunStatus.QUEUED,
        retry={
            "attempt": attempt + 1,
            "maxAttempts": settings.LIGHTFAST_RUN_MAX_ATTEMPTS,
            "error": {"type": WORKER_LOST_ERROR, "message": message},
        },
    )


def _run_requeue_after_worker_lost(
    run_id: uuid.UUID, still: Q, events: list[tuple[str, dict[str, Any]]], now: datetime
) -> bool:
    """Queue a lost run again (it keeps its slot) after `events`, and enqueue it; True if it matched."""
    with write_transaction():
        requeued = run_update_with_events(
            run_id,
            events,
            where=still,
            changes={"status": RunStatus.QUEUED, "enqueued_at": now, "heartbeat_at": None, "worker": ""},
            returning=("wall_limit_ms",),
        )
        if requeued is None:
            return False
        run = Run(pk=run_id, wall_limit_ms=requeued.returned[0])
        after_commit(lambda: run_enqueue(run))
        return True


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


def _run_end_with_worker_lost(
    run_id: uuid.UUID,
    still: Q,
    message: str,
    now: datetime,
    *,
    closing: Sequence[tuple[str, dict[str, Any]]] = (),
) -> bool:
    """Fail one run with `worker_lost` if it still matches `still`; gives back its slot. True if it ended."""
    with write_transaction():
        ended = run_update_with_events(
            run_id,
            [
                *closing,
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
