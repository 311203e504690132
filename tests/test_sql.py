"""lightfast_cloud/sql.py: identifiers from model metadata, values as the ORM sends them, statements run."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from execution.models import Run
from lightfast_cloud import sql
from organizations.models import Organization

pytestmark = pytest.mark.django_db


def test_identifiers_come_from_model_metadata_quoted_for_the_connection() -> None:
    quote = connection.ops.quote_name
    assert sql.vendor() == connection.vendor
    assert sql.table(Run) == quote(Run._meta.db_table)
    assert sql.column(Run, "organization") == quote("organization_id")
    assert sql.column(Run, "organization_id") == quote("organization_id")  # by attname too
    assert sql.columns(Run, ["status", "last_seq"]) == [quote("status"), quote("last_seq")]
    assert sql.select_columns(Run, ["status"], "r") == f"r.{quote('status')}"


def test_field_of_refuses_what_is_not_a_column() -> None:
    with pytest.raises(AssertionError, match="not a column"):
        sql.field_of(Organization, "runs")  # a reverse relation


def test_prep_value_is_what_the_orm_sends() -> None:
    field = Run._meta.get_field("input")
    value = {"city": "Oslo", "nested": [1, 2]}
    ours, orm = sql.prep_value(Run, "input", value), field.get_db_prep_save(value, connection)
    # PostgreSQL's driver wraps JSON in an adapter (psycopg's Jsonb) without equality: compare its payload.
    assert type(ours) is type(orm)
    assert getattr(ours, "obj", ours) == getattr(orm, "obj", orm)


def test_execute_and_fetch(alice: Any) -> None:
    table = sql.table(Organization)
    name, pk = sql.columns(Organization, ["name", "id"])
    organization = alice.organization
    statement = f"UPDATE {table} SET {name} = %s WHERE {pk} = %s"  # noqa: S608
    assert sql.execute(statement, ["Renamed", organization.pk]) == 1
    assert sql.execute(statement, ["Nobody", -1]) == 0
    select = f"SELECT {name} FROM {table} WHERE {pk} = %s"  # noqa: S608
    assert sql.fetch_one(select, [organization.pk]) == ("Renamed",)
    assert sql.fetch_one(select, [-1]) is None
    assert sql.fetch_all(select, [organization.pk]) == [("Renamed",)]
    assert Organization.objects.get(pk=organization.pk).name == "Renamed"
