"""Celery tasks of runs: `execute_run` on the `runs` queue and the periodic `reap_runs`."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from execution.services import run_execute, run_reap_lost, run_reap_queued


# A database error before the claim committed (e.g. SQLite busy) would otherwise drop the task and
# leave the run queued; retrying is safe because a claimed run is never claimed twice.
@shared_task(
    name="execution.tasks.execute_run",
    bind=True,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=0.5,
    retry_jitter=True,
    max_retries=5,
)
def execute_run(self: object, run_id: str, message_id: str | None = None) -> bool:
    """Claim the run (a redelivered task finds it claimed and does nothing) and drive it to its end."""
    hostname = getattr(getattr(self, "request", None), "hostname", None) or ""
    return run_execute(run_id=run_id, worker=str(hostname), message_id=message_id)


@shared_task(name="execution.tasks.reap_runs", ignore_result=True)
def reap_runs() -> int:
    """Retry or fail (`worker_lost`) runs of dead workers; re-enqueue or fail runs no worker claimed."""
    queued = run_reap_queued()
    lost = run_reap_lost()
    return lost["retried"] + lost["failed"] + queued["failed"]
