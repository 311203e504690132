"""Row writes and reads of the run hot path as plain SQL, built once per model and shape.

The ORM compiles every `create()`, `filter().update()` and `select_related().get()` anew and
instantiates a model per row; on the run path (a dozen statements per run, hundreds of runs a
second) that compiling was most of the CPU a run cost. These helpers build each statement's
text once, adapt values with the fields' own `get_db_prep_save` and convert results with the
backend's and fields' converters, so SQLite and PostgreSQL get exactly what the ORM would
send and read. They run through Django's cursor (transactions, error wrapping, execute
wrappers); they send no model signals (the run models have no receivers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Field, Model

ModelT = TypeVar("ModelT", bound=Model)
Converter = Callable[[Any], Any]

_insert_sql: dict[tuple[str, type[Model]], tuple[str, list[Field[Any, Any]], bool]] = {}
_update_sql: dict[tuple[Any, ...], str] = {}
_converters: dict[tuple[str, type[Model], str], Converter] = {}


def quote(name: str) -> str:
    """A quoted identifier for the current connection."""
    return str(connection.ops.quote_name(name))


def table(model: type[Model]) -> str:
    """The model's quoted table name."""
    return quote(model._meta.db_table)


def column(model: type[Model], name: str) -> str:
    """The quoted column of a field (by name or attname) of the model."""
    return _quoted_column(_field(model, name))


def _quoted_column(field: Field[Any, Any]) -> str:
    return quote(field.column or field.attname)


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.concrete, f"{model.__name__}.{name} is not a column"
    return field


def db_value(model: type[Model], name: str, value: Any) -> Any:
    """A Python value of a field as the driver takes it (what the ORM would send)."""
    return _field(model, name).get_db_prep_save(value, connection)


class Statement:
    """SQL text with its driver parameters, prepared before a transaction so that only running it is inside.

    SQLite writers take turns on one write lock (`execution.events.write_transaction`); what is
    adapted, serialised and compiled here is work the other writers do not wait for.
    """

    def __init__(self, sql: str, params: list[Any], *, returning: bool = False) -> None:
        self.sql = sql
        self.params = params
        self.returning = returning

    def execute(self) -> tuple[Any, ...] | None:
        """Run it: the RETURNING row (None: no row), else () if a row was affected and None if none was."""
        with connection.cursor() as cursor:
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
        super().__init__(sql, [self._value(field) for field in fields], returning=returning)

    def _value(self, field: Field[Any, Any]) -> Any:
        return field.get_db_prep_save(field.pre_save(self.obj, True), connection)

    def refresh(self, name: str) -> None:
        """Adapt one field again, once the instance has its value (a row inserted in the same transaction)."""
        field = _field(type(self.obj), name)
        index = self.fields.index(field)
        self.params[index] = self._value(field)

    def execute(self) -> tuple[Any, ...] | None:
        """Insert the row (the instance is saved afterwards: not `adding`, with its primary key)."""
        row = super().execute()
        if self.returning:
            assert row is not None
            self.obj.pk = row[0]
        self.obj._state.adding = False
        self.obj._state.db = connection.alias
        return row


def insert(obj: Model) -> Insert:
    """The prepared INSERT of every concrete field of `obj` (an auto primary key comes back by RETURNING)."""
    model = type(obj)
    key = (connection.vendor, model)
    compiled = _insert_sql.get(key)
    if compiled is None:
        pk = model._meta.pk
        assert pk is not None
        auto_pk = bool(pk.db_returning)
        fields = [field for field in model._meta.concrete_fields if not (auto_pk and field is pk)]
        columns = ", ".join(_quoted_column(field) for field in fields)
        # Identifiers from model metadata; every value is a parameter.
        sql = f"INSERT INTO {table(model)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
        if auto_pk:
            sql += f" RETURNING {_quoted_column(pk)}"
        compiled = _insert_sql[key] = (sql, fields, auto_pk)
    sql, fields, auto_pk = compiled
    return Insert(obj, sql, fields, returning=auto_pk)


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

    Its `execute` returns the RETURNING values as the driver gives them (`convert` turns them
    into Python values), an empty tuple without `returning`, or None when no row matched.
    """
    changes = changes or {}
    increments = increments or {}
    where = where or {}
    key = (connection.vendor, model, tuple(changes), tuple(increments), tuple(where), tuple(returning))
    sql = _update_sql.get(key)
    if sql is None:
        assigns = [f"{column(model, name)} = %s" for name in changes]
        assigns += [f"{column(model, name)} = {column(model, name)} + %s" for name in increments]
        pk_field = model._meta.pk
        assert pk_field is not None
        conditions = [f"{_quoted_column(pk_field)} = %s"] + [f"{column(model, name)} = %s" for name in where]
        # Identifiers from model metadata; every value is a parameter.
        sql = "UPDATE {} SET {} WHERE {}".format(  # noqa: S608
            table(model), ", ".join(assigns), " AND ".join(conditions)
        )
        if returning:
            sql += " RETURNING " + ", ".join(column(model, name) for name in returning)
        _update_sql[key] = sql
    params = [db_value(model, name, value) for name, value in changes.items()]
    params += list(increments.values())
    params.append(model._meta.pk.get_db_prep_save(pk, connection))  # type: ignore[union-attr]
    params += [db_value(model, name, value) for name, value in where.items()]
    return Statement(sql, params, returning=bool(returning))


def update_row(
    model: type[Model],
    pk: Any,
    *,
    changes: dict[str, Any] | None = None,
    increments: dict[str, int] | None = None,
    where: dict[str, Any] | None = None,
    returning: Sequence[str] = (),
) -> tuple[Any, ...] | None:
    """Run `update(...)` now."""
    statement = update(model, pk, changes=changes, increments=increments, where=where, returning=returning)
    return statement.execute()


def converter(model: type[Model], name: str) -> Converter:
    """The function that turns a driver value of a field into its Python value (as a queryset would)."""
    key = (connection.vendor, model, name)
    found = _converters.get(key)
    if found is None:
        field = _field(model, name)
        expression = field.get_col(model._meta.db_table)
        steps = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)

        def found(value: Any, steps: list[Any] = steps, expression: Any = expression) -> Any:
            for step in steps:
                value = step(value, expression, connection)
            return value

        _converters[key] = found
    return found


def convert(model: type[Model], names: Iterable[str], values: Iterable[Any]) -> list[Any]:
    """Driver values of the named fields, converted to Python values."""
    return [converter(model, name)(value) for name, value in zip(names, values, strict=True)]


def select_columns(model: type[Model], names: Sequence[str], alias: str) -> str:
    """`alias.col, …` for the named fields."""
    return ", ".join(f"{alias}.{column(model, name)}" for name in names)


def instance(model: type[ModelT], names: Sequence[str], values: Sequence[Any]) -> ModelT:
    """A model instance with the named fields set from driver values.

    The other fields are deferred: reading one would query the database, so the hot path only
    reads what it loaded.
    """
    converted = convert(model, names, values)
    loaded = {_field(model, name).attname: value for name, value in zip(names, converted, strict=True)}
    attnames = [field.attname for field in model._meta.concrete_fields if field.attname in loaded]
    return model.from_db(connection.alias, attnames, [loaded[attname] for attname in attnames])
