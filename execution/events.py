"""The one place that records run events and notifies the channel layer (nothing else sends to the layer).

Vocabulary: the AI SDK UI message stream (`start`, `start-step`, `text-start`, `text-delta`,
`text-end`, `tool-input-available`, `tool-output-available`, `tool-output-error`,
`finish-step`, `finish`, `error`) plus platform parts `data-log`, `data-usage` and
`data-status`. A stored event's payload is the chunk without its `type` key, so
`RunEvent.chunk()` is exactly what AI SDK clients read. Every run ends with one
`data-status` event whose `data.status` is terminal (`succeeded`, `failed`,
`cancelled`, `timed_out`); transports close the stream after it (SSE then sends
`data: [DONE]`).

Delivery contract for transports (websocket consumer, SSE):

* The database is the truth. `event_append` assigns the next `seq` (1, 2, 3… without gaps)
  and commits the row *before* it notifies.
* Then it publishes, best effort, to the group `run_group_name(run_id)` a message
  `{"type": "run.event", "run": id, "seq": n, "event": chunk}` (handler `run_event`).
  Notifications may be lost or arrive late; a consumer keeps the last seq it delivered,
  forwards a notification whose seq is last+1, and otherwise reads
  `run_events_after(run, last)` — so replay-then-tail has neither gaps nor duplicates.
  Subscribe to the group first, then replay from the database.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.sql import UpdateQuery

from execution.models import Run, RunEvent, run_group_name

logger = logging.getLogger(__name__)

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-available",
        "tool-output-available",
        "tool-output-error",
        "finish-step",
        "finish",
        "error",
        "data-log",
        "data-usage",
        "data-status",
    }
)
# The channel-layer message type; Channels calls the consumer method `run_event`.
NOTIFICATION_TYPE = "run.event"


_sqlite_writers = threading.RLock()
_sqlite_lock_files: dict[str, int] = {}


@contextmanager
def write_transaction(*, savepoint: bool = True) -> Iterator[None]:
    """`transaction.atomic()` for the run write paths; on SQLite, writers queue for the write lock.

    SQLite has one write lock and waits for it by sleeping and polling (1, 2, 5, 10… ms), so
    hundreds of threads contending for it starve each other into "database is locked", and
    two busy processes (web and worker) lose milliseconds per collision to those sleeps. Run
    writers therefore queue first on a process lock, then on an `flock` of a file next to
    the database, which wakes the next waiter the moment the holder commits. PostgreSQL locks
    rows, so there the gates are open. `savepoint=False` skips the savepoint when nested, for
    a step that is part of its caller's transaction (an error in it fails the whole transaction).
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(savepoint=savepoint):
            yield
        return
    with _sqlite_writers, _sqlite_file_lock(), transaction.atomic():
        yield


@contextmanager
def _sqlite_file_lock() -> Iterator[None]:
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        yield
        return
    fd = _sqlite_lock_files.get(name)
    if fd is None:
        fd = os.open(f"{name}.writers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _sqlite_lock_files[name] = fd
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class UnknownEventType(ValueError):
    """An event type outside the vocabulary above."""


def event_append(run: Run | uuid.UUID | str, type: str, payload: dict[str, Any] | None = None) -> RunEvent:  # noqa: A002
    """Store one event with the run's next seq, then notify the run's group."""
    return event_append_many(run, [(type, payload or {})])[0]


def event_append_many(
    run: Run | uuid.UUID | str, events: Sequence[tuple[str, dict[str, Any]]]
) -> list[RunEvent]:
    """Store several events in one transaction with consecutive seqs, then notify each in order."""
    rows = run_update_with_events(run, events)
    assert rows is not None, "an unconditional append always finds its run"
    return rows


def run_update_with_events(
    run: Run | uuid.UUID | str,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    where: Q | None = None,
    changes: dict[str, Any] | None = None,
) -> list[RunEvent] | None:
    """Update the run if it matches `where` and append `events` after it; None (nothing written) if not.

    One statement (`UPDATE … SET <changes>, last_seq = last_seq + n … RETURNING last_seq`) applies
    the conditional change and reserves the seqs, so a claim or an ending costs no extra
    round trips for its events. The UPDATE takes the run's row lock (PostgreSQL) or the write
    lock (SQLite, IMMEDIATE transactions) until commit, so concurrent appenders to one run get
    disjoint seq ranges; the unique (run, seq) constraint backs this up.
    """
    for event_type, _ in events:
        if event_type not in EVENT_TYPES:
            raise UnknownEventType(f"unknown run event type {event_type!r}")
    run_id = run.pk if isinstance(run, Run) else uuid.UUID(str(run))
    with write_transaction(savepoint=False):
        last_seq = _update_returning_last_seq(
            Run.objects.filter(where or Q(), pk=run_id),
            {**(changes or {}), "last_seq": F("last_seq") + len(events)},
        )
        if last_seq is None:
            return None
        first = last_seq - len(events) + 1
        rows = RunEvent.objects.bulk_create(
            [
                RunEvent(run_id=run_id, seq=first + index, type=event_type, payload=payload)
                for index, (event_type, payload) in enumerate(events)
            ]
        )
        if rows:
            transaction.on_commit(lambda: _notify(run_id, rows))
    if isinstance(run, Run):
        run.last_seq = last_seq
    return rows


def _update_returning_last_seq(queryset: QuerySet[Run], values: dict[str, Any]) -> int | None:
    """`queryset.update(**values)` for one run, returning its new last_seq (None: no row matched).

    Django's update() returns only a row count; the compiler's SQL plus RETURNING (PostgreSQL,
    SQLite >= 3.35) saves the SELECT that would read the value back.
    """
    query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    last_seq_column = connection.ops.quote_name(Run._meta.get_field("last_seq").column or "last_seq")
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {last_seq_column}", params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def run_events_after(run: Run | uuid.UUID | str, seq: int, *, limit: int | None = None) -> list[RunEvent]:
    """The run's events with seq greater than `seq`, in order (at most `limit`)."""
    run_id = run.pk if isinstance(run, Run) else run
    queryset = RunEvent.objects.filter(run_id=run_id, seq__gt=seq).order_by("seq")
    if limit is not None:
        queryset = queryset[:limit]
    return list(queryset)


def notification_for(event: RunEvent) -> dict[str, Any]:
    """The channel-layer message announcing one event."""
    return {"type": NOTIFICATION_TYPE, "run": str(event.run_id), "seq": event.seq, "event": event.chunk()}


def _notify(run_id: uuid.UUID, rows: list[RunEvent]) -> None:
    group = run_group_name(run_id)
    for row in rows:
        _notifier().publish(group, notification_for(row))


class _Notifier:
    """A background event loop that publishes notifications in order without blocking the caller.

    Sync code cannot await the channel layer cheaply (async_to_sync would build a loop and a
    redis connection per call), and the orchestrating thread must not wait on redis: one
    daemon thread per process owns the layer's connection and drains a bounded queue.
    """

    QUEUE_SIZE = 100_000

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._ready = threading.Event()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="run-event-notifier", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue(self.QUEUE_SIZE)
        self._loop.create_task(self._drain())
        self._ready.set()
        self._loop.run_forever()

    async def _drain(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        assert self._queue is not None
        while True:
            group, message = await self._queue.get()
            if layer is None:
                continue
            try:
                await layer.group_send(group, message)
            except (TimeoutError, OSError, ConnectionError) as exc:
                # Best effort by design: the event is committed; consumers catch up from the DB.
                logger.warning("run event notification to %s failed: %s", group, exc)
            except Exception:  # noqa: BLE001 - a layer bug must not stop later notifications
                logger.exception("run event notification to %s failed", group)

    def _enqueue(self, group: str, message: dict[str, Any]) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait((group, message))
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped % 1000 == 1:
                logger.warning("run event notifications dropped (queue full): %d so far", self._dropped)

    def publish(self, group: str, message: dict[str, Any]) -> None:
        """Queue one notification; returns at once."""
        self._loop.call_soon_threadsafe(self._enqueue, group, message)


_notifier_instance: _Notifier | None = None
_notifier_lock = threading.Lock()


def _notifier() -> _Notifier:
    global _notifier_instance
    if _notifier_instance is None:
        with _notifier_lock:
            if _notifier_instance is None:
                _notifier_instance = _Notifier()
    return _notifier_instance
