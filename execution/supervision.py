"""Per-process supervision of the runs a worker holds: heartbeats, cancel requests and wall deadlines."""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from execution.models import Run, RunStatus
from execution.providers.base import CancelToken
from execution.write_gate import write_transaction
from lightfast_cloud.outages import Outage

logger = logging.getLogger(__name__)

POLL_S = 0.25
# While the database is away the thread retries after 0.5 s, then every second: it heartbeats soon
# after the database is back, well within LIGHTFAST_RUN_STALE_S.
MAX_BACKOFF_S = 1.0
STUCK_GRACE_S = 30.0

CANCELLED = "cancelled"
TIMEOUT = "timeout"
WORKER_LOST = "worker_lost"


@dataclass
class _Held:
    token: CancelToken
    attempt: int  # the run's attempt this process claimed
    deadline: float  # time.monotonic()


class RunSupervisor:
    """Holds the runs of this process; see the module docstring."""

    def __init__(self) -> None:
        self._held: dict[uuid.UUID, _Held] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, run_id: uuid.UUID, *, attempt: int, wall_limit_s: float) -> Iterator[CancelToken]:
        """Supervise a run's attempt `attempt` during the block; yields the token that says when to stop."""
        held = _Held(token=CancelToken(), attempt=attempt, deadline=time.monotonic() + wall_limit_s)
        with self._lock:
            self._held[run_id] = held
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="run-supervisor", daemon=True)
                self._thread.start()
        try:
            yield held.token
        finally:
            with self._lock:
                self._held.pop(run_id, None)

    def _loop(self) -> None:
        last_heartbeat = float("-inf")
        outage = Outage("run supervision (database)", logger=logger, max_delay_s=MAX_BACKOFF_S)
        while True:
            time.sleep(POLL_S)
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            now = time.monotonic()
            for held_run in held.values():
                if now >= held_run.deadline:
                    held_run.token.cancel(TIMEOUT)
            try:
                self._poll_cancels(held)
                # The interval is read on every poll, so a changed setting applies at once.
                if now >= last_heartbeat + settings.LIGHTFAST_RUN_HEARTBEAT_S:
                    self._heartbeat(held, now)
                    last_heartbeat = now
            except Exception as exc:  # noqa: BLE001 - the thread outlives any failure: the runs it holds need it
                # Keep supervising (deadlines above need no database); heartbeat as soon as it is back.
                last_heartbeat = float("-inf")
                time.sleep(outage.failed(exc))
            else:
                outage.recovered()
            # Like a request's end: PostgreSQL's pooled connection goes back to the pool between
            # polls (this thread lives as long as the process); SQLite's is kept (CONN_MAX_AGE).
            try:
                close_old_connections()
            except DatabaseError:
                pass  # a broken connection is dropped all the same; the next poll opens another

    @staticmethod
    def _poll_cancels(held: dict[uuid.UUID, _Held]) -> None:
        requested = Run.objects.filter(pk__in=list(held), cancel_requested_at__isnull=False)
        for run_id in requested.values_list("pk", flat=True):
            held[run_id].token.cancel(CANCELLED)

    @staticmethod
    def _heartbeat(held: dict[uuid.UUID, _Held], now: float) -> None:
        alive = [
            Q(pk=run_id, attempt=item.attempt)
            for run_id, item in held.items()
            if now < item.deadline + STUCK_GRACE_S
        ]
        if alive:
            with write_transaction():
                Run.objects.filter(functools.reduce(operator.or_, alive), status=RunStatus.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        # A run that is no longer this attempt's (the reaper failed it, or re-queued it and another
        # worker claimed it) stops here.
        rows = Run.objects.filter(pk__in=list(held)).values_list("pk", "status", "attempt")
        for run_id, status, attempt in rows:
            if status != RunStatus.RUNNING or attempt != held[run_id].attempt:
                held[run_id].token.cancel(WORKER_LOST)


supervisor = RunSupervisor()
