"""Foreign keys whose column leads a composite index or unique constraint lose their own index.

Only the index is dropped (`DROP INDEX`): Django's own AlterField would copy each table on SQLite
and drop and re-validate the foreign key constraint on PostgreSQL.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0003_run_attempt"),
        ("organizations", "0006_fk_indexes_covered_by_composites"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="chatsession",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chat_sessions",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="execution.chatsession",
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="runevent",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="execution.run",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "execution_chatsession_organization_id_dfaa25d7"',
                    reverse_sql='CREATE INDEX "execution_chatsession_organization_id_dfaa25d7" ON "execution_chatsession" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "execution_message_session_id_827c8dbf"',
                    reverse_sql='CREATE INDEX "execution_message_session_id_827c8dbf" ON "execution_message" ("session_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "execution_run_organization_id_4c3cb34f"',
                    reverse_sql='CREATE INDEX "execution_run_organization_id_4c3cb34f" ON "execution_run" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "execution_runevent_run_id_5284483a"',
                    reverse_sql='CREATE INDEX "execution_runevent_run_id_5284483a" ON "execution_runevent" ("run_id")',
                ),
            ],
        ),
    ]
