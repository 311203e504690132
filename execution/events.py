"""The one place that records run events and notifies the channel layer (nothing else sends to the layer)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from execution.models import Run, RunEvent, run_group_name
from execution.publisher import publisher
from execution.statements import update
from execution.write_gate import after_commit, write_transaction
from lightfast_cloud import sql

logger = logging.getLogger(__name__)

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-available",
        "tool-approval-request",
        "tool-output-available",
        "tool-output-error",
        "tool-output-denied",
        "finish-step",
        "finish",
        "abort",
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


class UnknownEventType(ValueError):
    """An event type outside the vocabulary above."""


@dataclass(frozen=True)
class RunUpdate:
    """A run update that matched: the seqs its events got and the columns it asked back."""

    first_seq: int
    last_seq: int
    # The `returning` columns as the driver gave them (`lightfast_cloud.sql.convert` makes Python values).
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
    attempt: int | None = None,
    last_seq: int | None = None,
    where: Q | None = None,
    changes: dict[str, Any] | None = None,
    increments: dict[str, int] | None = None,
    returning: Sequence[str] = (),
) -> RunUpdate | None:
    """Update the run if it has `status`, `attempt` and `last_seq` (each when given, and matches `where`)
    and append `events` after it; None if not.

    One statement (`UPDATE … SET <changes>, last_seq = last_seq + n … RETURNING last_seq, …`)
    applies the conditional change and reserves the seqs, so a claim or an ending costs no extra
    round trips for its events (nor for the columns in `returning`). The UPDATE takes the run's row
    lock (PostgreSQL) or the write lock (SQLite, IMMEDIATE transactions) until commit, so concurrent
    appenders to one run get disjoint seq ranges; the unique (run, seq) constraint backs this up.
    The events go in with one multi-row INSERT (`sql.insert_rows`) and, once committed, out to the
    channel layer as one notification. `where` (a Q, compiled by the ORM) is for the rare paths such
    as the reapers; the hot paths use `status` and `attempt` only (a worker's writes name the
    attempt it claimed: once the reaper took the run back, they match nothing). `increments` adds to
    other counters in the same statement (the claim's `attempt`). `last_seq` makes a write that may
    have committed unseen safe to try again (see `AssistantTurn.flush`).
    """
    prepared = run_update_prepare(
        run,
        events,
        status=status,
        attempt=attempt,
        last_seq=last_seq,
        where=where,
        changes=changes,
        increments=increments,
        returning=returning,
    )
    with write_transaction(savepoint=False):
        return prepared.execute()


def run_update_prepare(
    run: Run | uuid.UUID | str,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    status: str | None = None,
    attempt: int | None = None,
    last_seq: int | None = None,
    where: Q | None = None,
    changes: dict[str, Any] | None = None,
    increments: dict[str, int] | None = None,
    returning: Sequence[str] = (),
) -> PreparedRunUpdate:
    """`run_update_with_events` prepared (statements built, events serialised) for a caller's transaction."""
    for event_type, _ in events:
        if event_type not in EVENT_TYPES:
            raise UnknownEventType(f"unknown run event type {event_type!r}")
    return PreparedRunUpdate(
        run,
        events,
        status=status,
        attempt=attempt,
        last_seq=last_seq,
        where=where,
        changes=changes,
        increments=increments,
        returning=returning,
    )


class PreparedRunUpdate:
    """A run update with events whose statements are built; `execute` runs them in the current transaction."""

    def __init__(
        self,
        run: Run | uuid.UUID | str,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        status: str | None,
        attempt: int | None = None,
        last_seq: int | None = None,
        where: Q | None,
        changes: dict[str, Any] | None,
        increments: dict[str, int] | None = None,
        returning: Sequence[str],
    ) -> None:
        self.run = run
        self.run_id = _run_id(run)
        self.events = events
        self.where = where
        self.status = status
        self.attempt = attempt
        self.last_seq = last_seq
        self.changes = changes or {}
        self.increments = {**(increments or {}), "last_seq": len(events)}
        self.columns = ("last_seq", *returning)
        conditions: dict[str, Any] = {}
        if status is not None:
            conditions["status"] = status
        if attempt is not None:
            conditions["attempt"] = attempt
        if last_seq is not None:
            conditions["last_seq"] = last_seq
        self.update = (
            update(
                Run,
                self.run_id,
                changes=self.changes,
                increments=self.increments,
                where=conditions or None,
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
            if self.attempt is not None:
                queryset = queryset.filter(attempt=self.attempt)
            if self.last_seq is not None:
                queryset = queryset.filter(last_seq=self.last_seq)
            values = {**self.changes, **{name: F(name) + n for name, n in self.increments.items()}}
            row = _update_returning(self.run_id, queryset, values, self.columns)
        if row is None:
            return None
        last_seq = int(row[0])
        first_seq = last_seq - len(self.events) + 1
        if self.rows:
            for index, event_row in enumerate(self.rows):
                event_row[1] = first_seq + index
            sql.insert_rows(RunEvent, EVENT_ROW_FIELDS, self.rows)
            run_id, events = self.run_id, self.events
            after_commit(lambda: _notify(run_id, first_seq, events))
        if isinstance(self.run, Run):
            self.run.last_seq = last_seq
        return RunUpdate(first_seq=first_seq, last_seq=last_seq, returned=tuple(row[1:]))


def _run_id(run: Run | uuid.UUID | str) -> uuid.UUID:
    if isinstance(run, Run):
        return cast(uuid.UUID, run.pk)
    return run if isinstance(run, uuid.UUID) else uuid.UUID(str(run))


# The RunEvent fields of `_event_rows`' values, in order.
EVENT_ROW_FIELDS = ("run", "seq", "type", "payload", "created_at")


def _event_rows(run_id: uuid.UUID, events: Sequence[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    """The INSERT parameters of the events (their seq, known once the run's update ran, is filled in then)."""
    if not events:
        return []
    db = sql.database()
    run_value = sql.prep_value(RunEvent, "run", run_id)
    created = sql.prep_value(RunEvent, "created_at", timezone.now())
    payload = sql.field_of(RunEvent, "payload")
    return [
        [run_value, 0, event_type, payload.get_db_prep_save(data, db), created] for event_type, data in events
    ]


def _update_returning(
    run_id: uuid.UUID, queryset: QuerySet[Run], values: dict[str, Any], columns: Sequence[str]
) -> tuple[Any, ...] | None:
    """`queryset.update(**values)` for one run, then `columns` of the updated row (None: no match).

    Only for updates conditioned on an arbitrary Q (the reaper's), which the plain-SQL statements
    do not build; both statements run in the caller's write transaction, which the UPDATE's row
    lock keeps to itself until commit. Public QuerySet API only (Django's update() returns a count).
    """
    if not queryset.update(**values):
        return None
    return tuple(Run.objects.filter(pk=run_id).values_list(*columns).get())


def notification_for(run_id: uuid.UUID | str, first_seq: int, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The channel-layer message announcing consecutive events (their chunks) from `first_seq` on."""
    return {"type": NOTIFICATION_TYPE, "run": str(run_id), "seq": first_seq, "events": chunks}


def _notify(run_id: uuid.UUID, first_seq: int, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    group = run_group_name(run_id)
    chunks = [{"type": event_type, **payload} for event_type, payload in events]
    step = NOTIFICATION_MAX_EVENTS
    for start in range(0, len(chunks), step):
        publisher().publish(group, notification_for(run_id, first_seq + start, chunks[start : start + step]))
