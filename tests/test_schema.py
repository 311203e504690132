"""The migrated schema: no index that another one already covers, and the hot lookups' plans."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection
from django.db.models import Model

from execution.models import ChatSession
from organizations.models import Organization

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("agents", "dashboard", "execution", "organizations")


def _indexes(table: str) -> dict[str, tuple[list[str], bool]]:
    """name -> (columns in order, unique) of every index on `table`, as the database reports them."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name: (list(details["columns"]), bool(details["unique"]))
        for name, details in constraints.items()
        if details["index"] or details["unique"] or details["primary_key"]
        if details["columns"] and not details.get("foreign_key")
    }


def _project_models() -> list[type[Model]]:
    return [
        model
        for app in PROJECT_APPS
        for model in apps.get_app_config(app).get_models(include_auto_created=True)
        if model._meta.managed
    ]


def _partial(model: type[Model]) -> set[str]:
    """Names of the model's partial indexes and constraints: they cover only the rows of their condition."""
    return {
        str(item.name)
        for item in [*model._meta.indexes, *model._meta.constraints]
        if getattr(item, "condition", None) is not None
    }


def test_no_plain_index_is_a_prefix_of_another_index_on_its_table() -> None:
    """A plain (non-unique) index whose columns lead another index is maintained for nothing.

    Worse, PostgreSQL without statistics for a table may pick the narrower one and filter: a
    chat turn's session lookup by (organization, public_id) read every session of the organization
    through the foreign key's own index (3,178 rows per chat on a 1,839-session table).
    """
    redundant = []
    for model in _project_models():
        table, partial = model._meta.db_table, _partial(model)
        indexes = _indexes(table)
        for name, (columns, unique) in indexes.items():
            if unique or name in partial:
                continue  # a unique index also enforces something; a partial one covers fewer rows
            for other, (other_columns, _) in indexes.items():
                if other == name or other in partial or len(other_columns) <= len(columns):
                    continue
                if other_columns[: len(columns)] == columns:
                    redundant.append(f"{table}.{name} {columns} (covered by {other} {other_columns})")
    assert redundant == []


def test_the_covered_foreign_keys_are_still_constraints_and_still_cascade() -> None:
    """Dropping the index kept the foreign key: a session needs its organization, and goes with it."""
    organization = Organization.objects.create(name="Schema", slug="schema")
    session = ChatSession.objects.create(organization=organization, agent="demo/assistant")
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, ChatSession._meta.db_table)
    foreign_keys = [
        c for c in constraints.values() if c.get("foreign_key") and c["columns"] == ["organization_id"]
    ]
    assert len(foreign_keys) == 1
    organization.delete()
    assert not ChatSession.objects.filter(pk=session.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL query plan")
def test_a_chat_session_lookup_uses_the_unique_index_without_statistics() -> None:
    """Before any ANALYZE (autovacuum off, or a table that just grew) the lookup still takes one row."""
    organization = Organization.objects.create(name="Plans", slug="plans")
    ChatSession.objects.bulk_create(
        ChatSession(organization=organization, agent="demo/assistant", public_id=f"chat-{number}")
        for number in range(500)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT id FROM execution_chatsession WHERE organization_id = %s AND public_id = %s",
            [organization.pk, "chat-7"],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "chatsession_unique_public_id" in plan, plan
    assert "Filter" not in plan, plan
