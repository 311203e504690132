"""Foreign keys whose column leads a composite index or unique constraint lose their own index.

Only the index is dropped (`DROP INDEX`): Django's own AlterField would copy each table on SQLite
and drop and re-validate the foreign key constraint on PostgreSQL.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("organizations", "0005_invitations"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="allowedorigin",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="allowed_origins",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="auditlog",
                    name="organization",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="audit_log",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="egressallowedhost",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="egress_hosts",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="membership",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="monthlyusage",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="monthly_usage",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="organizationvariable",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="variables",
                        to="organizations.organization",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "organizations_allowedorigin_organization_id_57ee7f6c"',
                    reverse_sql='CREATE INDEX "organizations_allowedorigin_organization_id_57ee7f6c" ON "organizations_allowedorigin" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "organizations_auditlog_organization_id_76f3142b"',
                    reverse_sql='CREATE INDEX "organizations_auditlog_organization_id_76f3142b" ON "organizations_auditlog" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "organizations_egressallowedhost_organization_id_531fcc8a"',
                    reverse_sql='CREATE INDEX "organizations_egressallowedhost_organization_id_531fcc8a" ON "organizations_egressallowedhost" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "organizations_membership_organization_id_6889aa64"',
                    reverse_sql='CREATE INDEX "organizations_membership_organization_id_6889aa64" ON "organizations_membership" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "organizations_monthlyusage_organization_id_ffde0d3e"',
                    reverse_sql='CREATE INDEX "organizations_monthlyusage_organization_id_ffde0d3e" ON "organizations_monthlyusage" ("organization_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "organizations_organizationvariable_organization_id_84d50991"',
                    reverse_sql='CREATE INDEX "organizations_organizationvariable_organization_id_84d50991" ON "organizations_organizationvariable" ("organization_id")',
                ),
            ],
        ),
    ]
