"""Adding one row to an organization's list setting (allowed hosts, allowed origins): once, audited."""

from __future__ import annotations

from typing import TypeVar

from django.db import IntegrityError, models, transaction

from organizations.errors import SettingLimitReached
from organizations.models import Organization
from organizations.services.audit import Actor, audit_record

Row = TypeVar("Row", bound=models.Model)


def setting_row_add(
    *,
    model: type[Row],
    organization: Organization,
    field: str,
    value: str,
    limit: int,
    limit_message: str,
    subject: str,
    actor: Actor,
) -> tuple[Row, bool]:
    """The row holding `value` (created: True) or the one already there (False); audited when added.

    Refuses past `limit` rows with SettingLimitReached; a row added concurrently is the same outcome
    as adding it twice. `subject` names the audit action (`<subject>.added`) and target type.
    """
    lookup = {"organization": organization, field: value}
    existing = model._default_manager.filter(**lookup).first()
    if existing is not None:
        return existing, False
    if model._default_manager.filter(organization=organization).count() >= limit:
        raise SettingLimitReached(limit_message)
    try:
        with transaction.atomic():
            row = model._default_manager.create(**lookup)
    except IntegrityError:
        return model._default_manager.get(**lookup), False
    audit_record(
        actor=actor,
        action=f"{subject}.added",
        organization=organization,
        target_type=subject,
        target_id=value,
        metadata={field: value},
    )
    return row, True


def setting_row_remove(
    *, row: models.Model, subject: str, target_id: str, metadata: dict, actor: Actor
) -> None:
    """Delete one row of an organization's setting, audited as `<subject>.removed`."""
    audit_record(
        actor=actor,
        action=f"{subject}.removed",
        organization=row.organization,  # type: ignore[attr-defined]
        target_type=subject,
        target_id=target_id,
        metadata=metadata,
    )
    row.delete()
