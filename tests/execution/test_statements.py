"""execution/statements.py: the run hot path's plain SQL gives and takes exactly what the ORM would."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from execution import statements
from execution.models import ChatSession, Run, RunStatus
from lightfast_cloud import sql
from tests.bundles import manifest_version

pytestmark = pytest.mark.django_db


def _run(alice: Any, **fields: Any) -> Run:
    version = manifest_version(alice.organization)
    return Run(organization=alice.organization, bundle_version=version, agent_key="weather", **fields)


def test_insert_writes_what_save_would_and_marks_the_instance_saved(alice: Any) -> None:
    session = ChatSession(organization=alice.organization, agent="weather/weather")
    statements.insert_row(session)  # an auto primary key comes back by RETURNING
    assert session.pk is not None and not session._state.adding
    run = _run(alice, session=session, input={"tool": "getWeather", "input": {"city": "Oslo"}})
    statements.insert_row(run)
    stored = Run.objects.get(pk=run.pk)
    for field in Run._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(run, field.attname), field.name


def test_insert_refresh_adapts_a_field_set_after_preparing(alice: Any) -> None:
    session = ChatSession(organization=alice.organization, agent="weather/weather")
    run = _run(alice, session=None)
    prepared = statements.insert(run)
    statements.insert_row(session)
    run.session = session
    prepared.refresh("session")
    prepared.execute()
    assert Run.objects.get(pk=run.pk).session_id == session.pk


def test_update_sets_increments_checks_and_returns(alice: Any) -> None:
    run = statements.insert_row(_run(alice))
    started = timezone.now()
    row = statements.update(
        Run,
        run.pk,
        changes={"status": RunStatus.RUNNING, "started_at": started},
        increments={"last_seq": 2},
        where={"status": RunStatus.QUEUED},
        returning=("last_seq", "started_at", "status"),
    ).execute()
    assert row is not None
    assert sql.convert(Run, ("last_seq", "started_at", "status"), row) == [2, started, "running"]
    stored = Run.objects.get(pk=run.pk)
    assert (stored.status, stored.last_seq, stored.started_at) == (RunStatus.RUNNING, 2, started)
    # The condition no longer holds: no row, nothing written.
    again = statements.update(Run, run.pk, increments={"last_seq": 1}, where={"status": RunStatus.QUEUED})
    assert again.execute() is None
    assert Run.objects.get(pk=run.pk).last_seq == 2
    # Without RETURNING: () when a row was affected.
    assert statements.update(Run, run.pk, changes={"worker": "w1"}).execute() == ()
    assert statements.update(Run, uuid.uuid4(), changes={"worker": "w1"}).execute() is None


def test_instance_from_driver_values_equals_the_orms(alice: Any) -> None:
    enqueued = timezone.now() - timedelta(seconds=5)
    run = statements.insert_row(_run(alice, enqueued_at=enqueued, input={"a": [1, "b"]}))
    names = ("id", "organization", "input", "enqueued_at", "status")
    columns = ", ".join(sql.column(Run, name) for name in names)
    row = sql.fetch_one(
        f"SELECT {columns} FROM {sql.table(Run)} WHERE {sql.column(Run, 'id')} = %s",  # noqa: S608
        [sql.prep_value(Run, "id", run.pk)],
    )
    assert row is not None
    loaded = sql.instance(Run, names, row)
    expected = Run.objects.only(*names).get(pk=run.pk)
    for name in names:
        attname = Run._meta.get_field(name).attname
        assert getattr(loaded, attname) == getattr(expected, attname), name
    assert loaded.get_deferred_fields() == expected.get_deferred_fields()
