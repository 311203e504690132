"""Per-process supervision of the runs a worker holds: heartbeats, cancel requests and wall deadlines."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from execution.models import Run, RunStatus
from execution.providers.base import CancelToken
from execution.write_gate import write_transaction

logger = logging.getLogger(__name__)

POLL_S = 0.25
STUCK_GRACE_S = 30.0

CANCELLED = "cancelled"
TIMEOUT = "timeout"
WORKER_LOST = "worker_lost"


@dataclass
class _Held:
    token: CancelToken
    deadline: float  # time.monotonic()


class RunSupervisor:
    """Holds the runs of this process; see the module docstring."""

    def __init__(self) -> None:
        self._held: dict[uuid.UUID, _Held] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, run_id: uuid.UUID, *, wall_limit_s: float) -> Iterator[CancelToken]:
        """Supervise a run while the block runs; yields the token that says when to stop."""
        held = _Held(token=CancelToken(), deadline=time.monotonic() + wall_limit_s)
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
        next_heartbeat = 0.0
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
                if now >= next_heartbeat:
                    self._heartbeat(held, now)
                    next_heartbeat = now + settings.LIGHTFAST_RUN_HEARTBEAT_S
            except DatabaseError as exc:
                # Keep supervising: a database hiccup must not strand the runs this process holds.
                logger.warning("run supervisor could not reach the database: %s", exc)
            # Like a request's end: PostgreSQL's pooled connection goes back to the pool between
            # polls (this thread lives as long as the process); SQLite's is kept (CONN_MAX_AGE).
            close_old_connections()

    @staticmethod
    def _poll_cancels(held: dict[uuid.UUID, _Held]) -> None:
        requested = Run.objects.filter(pk__in=list(held), cancel_requested_at__isnull=False)
        for run_id in requested.values_list("pk", flat=True):
            held[run_id].token.cancel(CANCELLED)

    @staticmethod
    def _heartbeat(held: dict[uuid.UUID, _Held], now: float) -> None:
        alive = [run_id for run_id, item in held.items() if now < item.deadline + STUCK_GRACE_S]
        with write_transaction():
            Run.objects.filter(pk__in=alive, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now())
        not_running = Run.objects.filter(pk__in=list(held)).exclude(status=RunStatus.RUNNING)
        for run_id in not_running.values_list("pk", flat=True):
            held[run_id].token.cancel(WORKER_LOST)


supervisor = RunSupervisor()
