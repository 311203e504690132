"""Operator actions on an organization (admin and `manage.py org`), each written to the audit log."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import transaction

from organizations.errors import TenancyError
from organizations.models import Organization
from organizations.quotas import ACTIVE_RUN_STATUSES, quota_check_run_limits, quota_period_reset
from organizations.services import Actor, audit_record, credentials_changed_on_commit, org_update_limits


class ReasonRequired(TenancyError):
    default_message = "Operator actions need a reason for the audit log."


def _require_reason(reason: str) -> str:
    if not reason.strip():
        raise ReasonRequired()
    return reason.strip()


def org_set_limits(
    *, organization: Organization, changes: dict[str, Any], actor: Actor, reason: str = ""
) -> Organization:
    """Change plan limits; per-run limits must stay within the platform maximums."""
    quota_check_run_limits(changes=changes)
    return org_update_limits(organization=organization, changes=changes, actor=actor, reason=reason)


def org_suspend(*, organization: Organization, actor: Actor, reason: str) -> int:
    """Suspend: every API call and websocket is refused from now on; queued and running runs are cancelled.

    Returns how many runs were asked to stop.
    """
    reason = _require_reason(reason)
    with transaction.atomic():
        Organization.objects.filter(pk=organization.pk).update(is_active=False)
        organization.is_active = False
        credentials_changed_on_commit(groups=[organization.connections_group])
        audit_record(
            actor=actor,
            action="organization.suspended",
            organization=organization,
            target=organization,
            reason=reason,
        )
    return org_cancel_runs(organization=organization, actor=actor, reason=f"organization suspended: {reason}")


def org_reactivate(*, organization: Organization, actor: Actor, reason: str = "") -> Organization:
    """Lift a suspension."""
    with transaction.atomic():
        Organization.objects.filter(pk=organization.pk).update(is_active=True)
        organization.is_active = True
        audit_record(
            actor=actor,
            action="organization.reactivated",
            organization=organization,
            target=organization,
            reason=reason,
        )
    return organization


def org_cancel_runs(
    *, organization: Organization, actor: Actor, reason: str, run_ids: list[Any] | None = None
) -> int:
    """Cancel the organization's queued and running runs (or only `run_ids`); each one is audited."""
    # Deferred: execution imports organizations at module level; this is the one call back.
    from execution.services import run_cancel

    reason = _require_reason(reason)
    run_model = apps.get_model("execution", "Run")
    runs = run_model.objects.filter(organization=organization, status__in=ACTIVE_RUN_STATUSES)
    if run_ids is not None:
        runs = runs.filter(pk__in=run_ids)
    count = 0
    for run in runs:
        run_cancel(run=run)
        audit_record(
            actor=actor,
            action="run.cancelled",
            organization=organization,
            target=run,
            reason=reason,
            metadata={"agent": run.agent_key, "status": run.status},
        )
        count += 1
    return count


def org_reset_quota_period(*, organization: Organization, actor: Actor, reason: str) -> dict[str, int]:
    """Zero this month's metered usage and recount concurrent runs; the old values go in the audit log."""
    reason = _require_reason(reason)
    with transaction.atomic():
        before = quota_period_reset(organization=organization)
        audit_record(
            actor=actor,
            action="organization.quota_period_reset",
            organization=organization,
            target=organization,
            reason=reason,
            metadata={"before": before},
        )
    return before
