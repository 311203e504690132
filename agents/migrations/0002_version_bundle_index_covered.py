"""A version's bundle foreign key loses its own index: `bundleversion_unique_number` starts with it.

Only the index is dropped (`DROP INDEX`): Django's own AlterField would copy the table on SQLite
and drop and re-validate the foreign key constraint on PostgreSQL.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="bundleversion",
                    name="bundle",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="versions",
                        to="agents.bundle",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "agents_bundleversion_bundle_id_8719bc14"',
                    reverse_sql='CREATE INDEX "agents_bundleversion_bundle_id_8719bc14" '
                    'ON "agents_bundleversion" ("bundle_id")',
                ),
            ],
        ),
    ]
