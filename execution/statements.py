"""Row writes of the run hot path as plain SQL (INSERT, UPDATE … RETURNING), each statement's text built
once per model and shape on top of `lightfast_cloud.sql` (which also makes model instances from rows)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from lightfast_cloud.sql import column_for, database, field_of, table_for, vendor

# The ORM compiles every `create()`, `filter().update()` and `select_related().get()` anew and
# instantiates a model per row; on the run path that compiling cost more than the statements. These
# adapt values with the fields' own `get_db_prep_save` and convert results with the backend's and
# fields' converters, so the database gets and gives exactly what the ORM would; they send no model
# signals (the run models have no receivers).

ModelT = TypeVar("ModelT", bound=Model)


class Statement:
    """SQL text with its driver parameters, prepared before a transaction so that only running it is inside.

    SQLite writers take turns on one write lock (`execution.write_gate.write_transaction`); what is
    adapted, serialised and compiled here is work the other writers do not wait for.
    """

    def __init__(self, sql: str, params: list[Any], *, returning: bool = False) -> None:
        self.sql = sql
        self.params = params
        self.returning = returning

    def execute(self) -> tuple[Any, ...] | None:
        """Run it: the RETURNING row (None: no row), else () if a row was affected and None if none was."""
        with database().cursor() as cursor:
            cursor.execute(self.sql, self.params)
            if self.returning:
                row = cursor.fetchone()
                return None if row is None else tuple(row)
            return () if cursor.rowcount else None


class Insert(Statement):
    """The INSERT of one model instance; `execute` sets an auto primary key from RETURNING, like save()."""

    def __init__(self, obj: Model, sql: str, fields: list[Field[Any, Any]], *, returning: bool) -> None:
        self.obj = obj
        self.fields = fields
        db = database()
        super().__init__(sql, [self._value(field, db) for field in fields], returning=returning)

    def _value(self, field: Field[Any, Any], db: BaseDatabaseWrapper) -> Any:
        return field.get_db_prep_save(field.pre_save(self.obj, True), db)

    def refresh(self, name: str) -> None:
        """Adapt one field again, once the instance has its value (a row inserted in the same transaction)."""
        field = field_of(type(self.obj), name)
        self.params[self.fields.index(field)] = self._value(field, database())

    def execute(self) -> tuple[Any, ...] | None:
        """Insert the row (the instance is saved afterwards: not `adding`, with its primary key)."""
        row = super().execute()
        if self.returning:
            assert row is not None
            self.obj.pk = row[0]
        self.obj._state.adding = False
        self.obj._state.db = DEFAULT_DB_ALIAS
        return row


def insert(obj: Model) -> Insert:
    """The prepared INSERT of every concrete field of `obj` (an auto primary key comes back by RETURNING)."""
    sql, fields, auto_pk = _insert_shape(vendor(), type(obj))
    return Insert(obj, sql, fields, returning=auto_pk)


@functools.cache
def _insert_shape(vendor: str, model: type[Model]) -> tuple[str, list[Field[Any, Any]], bool]:
    pk = model._meta.pk
    assert pk is not None
    auto_pk = bool(pk.db_returning)
    fields = [field for field in model._meta.concrete_fields if not (auto_pk and field is pk)]
    columns = ", ".join(column_for(vendor, model, field.name) for field in fields)
    # Identifiers from model metadata; every value is a parameter.
    sql = f"INSERT INTO {table_for(vendor, model)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
    if auto_pk:
        sql += f" RETURNING {column_for(vendor, model, pk.name)}"
    return sql, fields, auto_pk


def insert_row(obj: ModelT) -> ModelT:
    """INSERT `obj` now (see `insert`); returns it, saved."""
    insert(obj).execute()
    return obj


def update(
    model: type[Model],
    pk: Any,
    *,
    changes: dict[str, Any] | None = None,
    increments: dict[str, int] | None = None,
    where: dict[str, Any] | None = None,
    returning: Sequence[str] = (),
) -> Statement:
    """The prepared `UPDATE … SET changes, col = col + n … WHERE pk AND field = value … RETURNING …`.

    Its `execute` returns the RETURNING values as the driver gives them (`lightfast_cloud.sql.convert`
    turns them into Python values), an empty tuple without `returning`, or None when no row matched.
    """
    changes = changes or {}
    increments = increments or {}
    where = where or {}
    db = database()
    sql = _update_sql(
        str(db.vendor), model, tuple(changes), tuple(increments), tuple(where), tuple(returning)
    )
    params = [field_of(model, name).get_db_prep_save(value, db) for name, value in changes.items()]
    params += list(increments.values())
    params.append(model._meta.pk.get_db_prep_save(pk, db))  # type: ignore[union-attr]
    params += [field_of(model, name).get_db_prep_save(value, db) for name, value in where.items()]
    return Statement(sql, params, returning=bool(returning))


@functools.cache
def _update_sql(
    vendor: str,
    model: type[Model],
    changes: tuple[str, ...],
    increments: tuple[str, ...],
    where: tuple[str, ...],
    returning: tuple[str, ...],
) -> str:
    def col(name: str) -> str:
        return column_for(vendor, model, name)

    assigns = [f"{col(name)} = %s" for name in changes] + [
        f"{col(name)} = {col(name)} + %s" for name in increments
    ]
    pk = model._meta.pk
    assert pk is not None
    conditions = [f"{col(pk.name)} = %s"] + [f"{col(name)} = %s" for name in where]
    # Identifiers from model metadata; every value is a parameter.
    sql = f"UPDATE {table_for(vendor, model)} SET {', '.join(assigns)} WHERE {' AND '.join(conditions)}"  # noqa: S608
    if returning:
        sql += " RETURNING " + ", ".join(col(name) for name in returning)
    return sql
