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
* Then it publishes, best effort, to the group `run_group_name(run_id)` one message for the
  events committed together: `{"type": "run.events", "run": id, "seq": n, "events": [chunk,
  …]}` (handler `run_events`), the chunks having seqs n, n+1, …. Notifications may be lost
  or arrive late; a consumer keeps the last seq it delivered, forwards the chunks after it
  when a notification starts at or before last+1, and otherwise reads
  `run_events_after(run, last)` — so replay-then-tail has neither gaps nor duplicates.
  Subscribe to the group first, then replay from the database.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.sentinel
from channels_redis.utils import _consistent_hash, decode_hosts
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone
from redis import exceptions as redis_exceptions

from execution import statements
from execution.models import Run, RunEvent, run_group_name
from execution.statements import update

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
# The channel-layer message type; Channels calls the consumer method `run_events`.
NOTIFICATION_TYPE = "run.events"
# Events of one flush go out as one notification, split above this many (a bounded message size).
NOTIFICATION_MAX_EVENTS = 100


_sqlite_writers = threading.RLock()
_sqlite_lock_files: dict[str, int] = {}
CHECKPOINT_INTERVAL_S = 0.2
# Per thread: the callbacks of a committed SQLite write transaction, run once its gate is open.
_gated = threading.local()


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

    Every writer waits for the holder, so the gate is held for the transaction only: what
    `after_commit` registered runs once the gate is open again (a Celery publish or a
    channel-layer notification would otherwise keep every other writer waiting on redis).
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(savepoint=savepoint):
            yield
        return
    callbacks: list[Callable[[], None]] = []
    _gated.callbacks = callbacks
    try:
        with _sqlite_writers, _sqlite_file_lock(), transaction.atomic():
            yield
    finally:
        _gated.callbacks = None
    for callback in callbacks:
        callback()


def after_commit(callback: Callable[[], None]) -> None:
    """`transaction.on_commit(callback)`, run after `write_transaction` released the SQLite write gate.

    Django decides whether and when the callback runs (savepoints rolled back drop it); an
    outermost `write_transaction` only moves the call from inside its gate to right after it.
    """
    transaction.on_commit(lambda: _run_after_gate(callback))


def _run_after_gate(callback: Callable[[], None]) -> None:
    callbacks: list[Callable[[], None]] | None = getattr(_gated, "callbacks", None)
    if callbacks is None:
        callback()
    else:
        callbacks.append(callback)


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
        threading.Thread(target=_sqlite_checkpoint_loop, name="sqlite-checkpointer", daemon=True).start()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _sqlite_checkpoint_loop() -> None:
    """Copy the WAL into the database every CHECKPOINT_INTERVAL_S, outside the write gate.

    SQLite's own checkpoint runs inside the commit that crosses `wal_autocheckpoint` pages, and
    syncs the file: measured here, 1 % of the run commits took 10-14 ms that way, every writer
    of every process waiting behind them. A PASSIVE checkpoint neither waits for nor blocks
    readers and writers, so this thread (one per process that writes runs) keeps the WAL short
    and the commits cheap; the settings raise `wal_autocheckpoint` so that it stays the backstop.
    """
    while True:
        time.sleep(CHECKPOINT_INTERVAL_S)
        try:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except DatabaseError as exc:
            logger.warning("SQLite checkpoint failed: %s", exc)
            close_old_connections()
        except Exception:  # noqa: BLE001 - the backstop (wal_autocheckpoint) stays; keep checkpointing
            logger.exception("SQLite checkpoint failed")


class UnknownEventType(ValueError):
    """An event type outside the vocabulary above."""


@dataclass(frozen=True)
class RunUpdate:
    """A run update that matched: the seqs its events got and the columns it asked back."""

    first_seq: int
    last_seq: int
    # The `returning` columns as the driver gave them (`statements.convert` makes Python values).
    returned: tuple[Any, ...]


def event_append(run: Run | uuid.UUID | str, type: str, payload: dict[str, Any] | None = None) -> RunEvent:  # noqa: A002
    """Store one event with the run's next seq, then notify the run's group."""
    return event_append_many(run, [(type, payload or {})])[0]


def event_append_many(
    run: Run | uuid.UUID | str, events: Sequence[tuple[str, dict[str, Any]]]
) -> list[RunEvent]:
    """Store several events in one transaction with consecutive seqs, then notify them together."""
    update = run_update_with_events(run, events)
    assert update is not None, "an unconditional append always finds its run"
    run_id = _run_id(run)
    return [
        RunEvent(run_id=run_id, seq=update.first_seq + index, type=event_type, payload=payload)
        for index, (event_type, payload) in enumerate(events)
    ]


def run_update_with_events(
    run: Run | uuid.UUID | str,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    status: str | None = None,
    where: Q | None = None,
    changes: dict[str, Any] | None = None,
    returning: Sequence[str] = (),
) -> RunUpdate | None:
    """Update the run if it has `status` (and matches `where`) and append `events` after it; None if not.

    One statement (`UPDATE … SET <changes>, last_seq = last_seq + n … RETURNING last_seq, …`)
    applies the conditional change and reserves the seqs, so a claim or an ending costs no
    extra round trips for its events (nor for the columns in `returning`). The UPDATE takes
    the run's row lock (PostgreSQL) or the write lock (SQLite, IMMEDIATE transactions) until
    commit, so concurrent appenders to one run get disjoint seq ranges; the unique (run, seq)
    constraint backs this up. The events go in with one executemany and, once committed, out
    to the channel layer as one notification. `where` (a Q, compiled by the ORM) is for the
    rare paths such as the reapers; the hot paths use `status` only.
    """
    prepared = run_update_prepare(
        run, events, status=status, where=where, changes=changes, returning=returning
    )
    with write_transaction(savepoint=False):
        return prepared.execute()


def run_update_prepare(
    run: Run | uuid.UUID | str,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    status: str | None = None,
    where: Q | None = None,
    changes: dict[str, Any] | None = None,
    returning: Sequence[str] = (),
) -> PreparedRunUpdate:
    """`run_update_with_events` prepared (statements built, events serialised) for a caller's transaction."""
    for event_type, _ in events:
        if event_type not in EVENT_TYPES:
            raise UnknownEventType(f"unknown run event type {event_type!r}")
    return PreparedRunUpdate(run, events, status=status, where=where, changes=changes, returning=returning)


class PreparedRunUpdate:
    """A run update with events whose statements are built; `execute` runs them in the current transaction."""

    def __init__(
        self,
        run: Run | uuid.UUID | str,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        status: str | None,
        where: Q | None,
        changes: dict[str, Any] | None,
        returning: Sequence[str],
    ) -> None:
        self.run = run
        self.run_id = _run_id(run)
        self.events = events
        self.where = where
        self.status = status
        self.changes = changes or {}
        self.columns = ("last_seq", *returning)
        self.update = (
            update(
                Run,
                self.run_id,
                changes=self.changes,
                increments={"last_seq": len(events)},
                where={"status": status} if status is not None else None,
                returning=self.columns,
            )
            if where is None
            else None
        )
        self.rows = _event_rows(self.run_id, events)

    def execute(self) -> RunUpdate | None:
        """Run the update and insert the events (in a write transaction); None when the run did not match."""
        assert connection.in_atomic_block, "a run update with events runs inside a write transaction"
        if self.update is not None:
            row = self.update.execute()
        else:
            queryset = Run.objects.filter(self.where or Q(), pk=self.run_id)
            if self.status is not None:
                queryset = queryset.filter(status=self.status)
            values = {**self.changes, "last_seq": F("last_seq") + len(self.events)}
            row = _update_returning(queryset, values, self.columns)
        if row is None:
            return None
        last_seq = int(row[0])
        first_seq = last_seq - len(self.events) + 1
        if self.rows:
            for index, event_row in enumerate(self.rows):
                event_row[1] = first_seq + index
            with connection.cursor() as cursor:
                cursor.executemany(_insert_events_sql(statements.vendor()), self.rows)
            run_id, events = self.run_id, self.events
            after_commit(lambda: _notify(run_id, first_seq, events))
        if isinstance(self.run, Run):
            self.run.last_seq = last_seq
        return RunUpdate(first_seq=first_seq, last_seq=last_seq, returned=tuple(row[1:]))


def _run_id(run: Run | uuid.UUID | str) -> uuid.UUID:
    if isinstance(run, Run):
        return cast(uuid.UUID, run.pk)
    return run if isinstance(run, uuid.UUID) else uuid.UUID(str(run))


def _event_rows(run_id: uuid.UUID, events: Sequence[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    """The INSERT parameters of the events (their seq, known once the run's update ran, is filled in then)."""
    if not events:
        return []
    db = statements.database()
    run_value = statements.field_of(RunEvent, "run").get_db_prep_save(run_id, db)
    created = statements.field_of(RunEvent, "created_at").get_db_prep_save(timezone.now(), db)
    payload = statements.field_of(RunEvent, "payload")
    return [
        [run_value, 0, event_type, payload.get_db_prep_save(data, db), created] for event_type, data in events
    ]


@functools.cache
def _insert_events_sql(vendor: str) -> str:
    names = ("run", "seq", "type", "payload", "created_at")
    return "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        statements.table(RunEvent),
        ", ".join(statements.column(RunEvent, name) for name in names),
        ", ".join(["%s"] * len(names)),
    )


def _update_returning(
    queryset: QuerySet[Run], values: dict[str, Any], columns: Sequence[str]
) -> tuple[Any, ...] | None:
    """`queryset.update(**values)` for one run, returning `columns` of the updated row (None: no match).

    Django's update() returns only a row count; the compiler's SQL plus RETURNING (PostgreSQL,
    SQLite >= 3.35) saves the SELECT that would read the values back.
    """
    query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    returned = ", ".join(statements.column(Run, name) for name in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {returned}", params)
        row = cursor.fetchone()
    return None if row is None else tuple(row)


def run_events_after(run: Run | uuid.UUID | str, seq: int, *, limit: int | None = None) -> list[RunEvent]:
    """The run's events with seq greater than `seq`, in order (at most `limit`)."""
    run_id = run.pk if isinstance(run, Run) else run
    queryset = RunEvent.objects.filter(run_id=run_id, seq__gt=seq).order_by("seq")
    if limit is not None:
        queryset = queryset[:limit]
    return list(queryset)


def notification_for(run_id: uuid.UUID | str, first_seq: int, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The channel-layer message announcing consecutive events (their chunks) from `first_seq` on."""
    return {"type": NOTIFICATION_TYPE, "run": str(run_id), "seq": first_seq, "events": chunks}


# The channel-layer message telling live connections to re-check their credentials now
# (handler `credentials_changed`); it carries nothing to trust: the connection reads the database.
CREDENTIALS_CHANGED_TYPE = "credentials.changed"


def credentials_changed_notify(groups: Sequence[str]) -> None:
    """Publish `credentials.changed` to each group now, in the caller's thread (one round trip per shard).

    Not queued like run events: a revocation is rare, and a short-lived process (a management
    command) may exit before a queue drains. Best effort all the same: connections also re-check
    on their own every LIGHTFAST_CREDENTIAL_RECHECK_S.
    """
    if not groups:
        return
    try:
        _publisher().send_now([(group, {"type": CREDENTIALS_CHANGED_TYPE}) for group in groups])
    except (TimeoutError, OSError, redis_exceptions.RedisError) as exc:
        logger.warning("credential change notification to %d group(s) failed: %s", len(groups), exc)


def _notify(run_id: uuid.UUID, first_seq: int, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    group = run_group_name(run_id)
    chunks = [{"type": event_type, **payload} for event_type, payload in events]
    step = NOTIFICATION_MAX_EVENTS
    for start in range(0, len(chunks), step):
        _publisher().publish(group, notification_for(run_id, first_seq + start, chunks[start : start + step]))


class _Publisher:
    """A daemon thread that publishes notifications in order without blocking the caller.

    The orchestrating thread only queues (no redis wait, no event loop); this thread takes
    everything queued and sends it in one pipelined round trip per shard, with the layer's
    own serializer and group channel names, so a Channels consumer cannot tell it from
    `group_send`. Measured (in-process `run_execute`, demo model + one tool call, three
    notifications a run): 0.4-0.5 ms less CPU per run than the event loop + `group_send` it
    replaced (a loop wake-up per message, one round trip each, redis.asyncio's per-command
    timeout, pool and retry wrappers).
    """

    QUEUE_SIZE = 100_000
    MAX_BATCH = 500

    def __init__(self) -> None:
        from channels.layers import get_channel_layer

        # _layer_shards() refuses any layer but channels_redis's pub/sub one.
        self._shards, self._prefix = _layer_shards()
        self._layer = get_channel_layer()
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="run-event-publisher", daemon=True)
        self._thread.start()

    def publish(self, group: str, message: dict[str, Any]) -> None:
        """Queue one notification; returns at once (drops it, logged, when the queue is full)."""
        if self._queue.qsize() >= self.QUEUE_SIZE:
            self._dropped += 1
            if self._dropped % 1000 == 1:
                logger.warning("run event notifications dropped (queue full): %d so far", self._dropped)
            return
        self._queue.put((group, message))

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(batch)
            except (TimeoutError, OSError, redis_exceptions.RedisError) as exc:
                # Best effort by design: the events are committed; consumers catch up from the DB.
                logger.warning("%d run event notification(s) failed: %s", len(batch), exc)
            except Exception:  # noqa: BLE001 - a serializer bug must not stop later notifications
                logger.exception("%d run event notification(s) failed", len(batch))

    def send_now(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish `batch` in the caller's thread (the clients' pools are thread-safe); raises on failure."""
        self._send(batch)

    def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        pipes: dict[int, Any] = {}
        for group, message in batch:
            channel = f"{self._prefix}__group__{group}"
            shard = _consistent_hash(channel, len(self._shards))
            if shard not in pipes:
                pipes[shard] = self._shards[shard].pipeline(transaction=False)
            pipes[shard].publish(channel, self._layer.serialize(message))
        for pipe in pipes.values():
            pipe.execute()


def _layer_shards() -> tuple[list[redis.Redis], str]:
    """Sync clients for the hosts of the configured RedisPubSubChannelLayer, and its prefix.

    The same host forms as channels_redis (`address` URL, sentinel, connection kwargs), as
    synchronous connection pools.
    """
    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    config: dict[str, Any] = layer.get("CONFIG", {})
    backend = layer["BACKEND"]
    if backend != "channels_redis.pubsub.RedisPubSubChannelLayer":
        raise ImproperlyConfigured(f"run events publish to a RedisPubSubChannelLayer, not {backend}")
    shards = []
    for host in decode_hosts(config.get("hosts")):
        # A redis that stops answering must not wedge the publisher thread for good.
        host = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, **host}
        if "address" in host:
            pool = redis.ConnectionPool.from_url(host.pop("address"), **host)
        elif "master_name" in host:
            sentinels, sentinel_kwargs = host.pop("sentinels"), host.pop("sentinel_kwargs", None)
            sentinel = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
            pool = redis.sentinel.SentinelConnectionPool(host.pop("master_name"), sentinel, **host)
        else:
            pool = redis.ConnectionPool(**host)
        shards.append(redis.Redis(connection_pool=pool))
    return shards, str(config.get("prefix", "asgi"))


_publisher_instance: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _publisher_instance
    if _publisher_instance is None:
        with _publisher_lock:
            if _publisher_instance is None:
                _publisher_instance = _Publisher()
    return _publisher_instance
