"""The write transaction of the run paths: on SQLite a queue for the one write lock, and WAL checkpoints
in a thread; on PostgreSQL plain `transaction.atomic()`."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from lightfast_cloud import sql
from lightfast_cloud.outages import Outage, loop_forever

logger = logging.getLogger(__name__)

# What a database that refuses or drops connections (or SQLite busy past its timeout) raises: a
# write that failed so may be tried again once it answers.
TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

T = TypeVar("T")

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


class DatabaseRetries:
    """The waits between tries of a run write while the database is unreachable.

    `wait(exc)` drops the broken connection (the next try takes a new one from the pool), logs the
    first failure, sleeps 0.1 s doubling to 2 s, and re-raises `exc` once `budget_s` (by default
    LIGHTFAST_RUN_STALE_S: past it the reaper may take the run back anyway) is spent. Whether a write
    that failed had committed is the caller's question: run writes are conditional updates, so a
    second try of a committed one matches nothing.
    """

    def __init__(self, what: str, *, budget_s: float | None = None) -> None:
        self.what = what
        budget = settings.LIGHTFAST_RUN_STALE_S if budget_s is None else budget_s
        self.deadline = time.monotonic() + budget
        self.delay = 0.1
        self.failures = 0

    def wait(self, exc: Exception) -> None:
        """After a transient failure: wait before the next try, or raise `exc` when out of time."""
        self.failures += 1
        try:
            connection.close()
        except DatabaseError:
            pass  # already broken: closing it is all that was asked
        if time.monotonic() + self.delay > self.deadline:
            raise exc
        if self.failures == 1:
            logger.warning("%s: the database is unreachable (%s); trying again", self.what, exc)
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 2.0)


def read_retrying(what: str, read: Callable[[], T]) -> T:
    """`read()`, a run path's idempotent read, tried again while the database is unreachable.

    A run's thread holds its connection from the claim on: when the database restarted or a network
    fault reset the connection meanwhile, the next read fails at once although the database may be back
    (or back within seconds). Such a read waits and tries again on a new connection (DatabaseRetries)
    rather than failing the run. Inside a transaction it is tried once: the transaction is lost anyway.
    """
    retries: DatabaseRetries | None = None
    while True:
        try:
            return read()
        except TRANSIENT_DATABASE_ERRORS as exc:
            if connection.in_atomic_block:
                raise
            retries = retries or DatabaseRetries(what)
            retries.wait(exc)


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

    SQLite's own checkpoint runs inside the commit that crosses `wal_autocheckpoint` pages and
    syncs the file, every writer of every process waiting behind it. A PASSIVE checkpoint neither
    waits for nor blocks readers and writers, so this thread (one per process that writes runs)
    keeps the WAL short and the commits cheap; the settings raise `wal_autocheckpoint` so that it
    stays the backstop.
    """
    outage = Outage("SQLite WAL checkpoints", logger=logger, max_delay_s=5.0)

    def checkpoint() -> None:
        try:
            sql.fetch_one("PRAGMA wal_checkpoint(PASSIVE)", [])
        except DatabaseError:
            close_old_connections()  # a broken connection is replaced on the next pass
            raise

    # The backstop (wal_autocheckpoint) stays whatever happens here; this thread keeps checkpointing.
    loop_forever(checkpoint, outage=outage, interval_s=CHECKPOINT_INTERVAL_S)
